"""Scaled dot-product attention, dispatched by name.

Every network calls `attention(q, k, v, impl=...)`; the implementation is a
config field, so a faster kernel can be swapped in without touching the
networks. Layout is `[batch, seq, heads, head_dim]` throughout (the layout of
`jax.nn.dot_product_attention`).

sCM and MeanFlow take `jax.jvp` through the network, which only some
implementations support; those are listed in `FORWARD_MODE_IMPLS`, and JVP
methods call `require_forward_mode` to fail early with a readable message rather
than deep inside a trace.
"""

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from fewstep_jax.kernels import flash_attention
from fewstep_jax.mesh_axes import BATCH_AXES

AttentionFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """softmax(q k^T / sqrt(head_dim)) v in plain jnp.

  Logits and softmax are float32 whatever the input dtype, because bfloat16
  logits lose the small differences that decide the attention weights. Plain
  jnp means every JAX transformation works, `jax.jvp` included; the price is
  O(seq_q * seq_k) memory.

  Args:
    q: [B, Nq, heads, head_dim].
    k: [B, Nk, heads, head_dim].
    v: [B, Nk, heads, head_dim].

  Returns:
    [B, Nq, heads, head_dim] in q's dtype.
  """
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum(
      'bqhd,bkhd->bhqk', q, k, preferred_element_type=jnp.float32) * scale
  weights = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum(
      'bhqk,bkhd->bqhd', weights.astype(v.dtype), v,
      preferred_element_type=jnp.float32)
  return out.astype(q.dtype)


def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """cuDNN fused attention (GPU only; no forward-mode derivative).

  Args:
    q: [B, Nq, heads, head_dim].
    k: [B, Nk, heads, head_dim].
    v: [B, Nk, heads, head_dim].

  Returns:
    [B, Nq, heads, head_dim].
  """
  return jax.nn.dot_product_attention(q, k, v, implementation='cudnn')


# The Pallas kernel family for each platform, and whether to interpret it. On
# CPU the GPU kernels run in interpret mode: slow, but the same code path, so
# tiny networks with attention='pallas' are testable on a laptop.
PALLAS_PLATFORMS: dict[str, tuple[str, bool]] = {
    'tpu': ('tpu', False),
    'gpu': ('gpu', False),
    'cuda': ('gpu', False),
    'rocm': ('gpu', False),
    'cpu': ('gpu', True),
}


def pallas_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """`kernels.flash_attention` for the default platform (see PALLAS_PLATFORMS).

  Forward, backward and JVP are Pallas kernels with O(seq) memory; gradients
  that flow through a JVP tangent are refused (the sCM and MeanFlow losses
  stop-gradient it).

  XLA cannot partition a kernel: under a multi-device jit it would gather the
  whole batch onto every device and run it there. So when a mesh is in context
  (the trainer sets its mesh while tracing the step; `jax.set_mesh` does in a
  notebook) and the batch divides over the mesh's batch axes, the kernel runs
  under `shard_map`, one batch shard per device.

  Args:
    q: [B, Nq, heads, head_dim].
    k: [B, Nk, heads, head_dim].
    v: [B, Nk, heads, head_dim].

  Returns:
    [B, Nq, heads, head_dim] in q's dtype.
  """
  platform = jax.default_backend()
  if platform not in PALLAS_PLATFORMS:
    raise ValueError(
        f'attention impl "pallas" has no kernels for platform {platform!r}; '
        f'supported: {sorted(PALLAS_PLATFORMS)}. Use attention "xla".')
  backend, interpret = PALLAS_PLATFORMS[platform]
  kernel = functools.partial(flash_attention, backend=backend,
                             interpret=interpret)
  return _per_batch_shard(kernel, q.shape[0])(q, k, v)


def _per_batch_shard(fn, batch: int):
  """`fn` under shard_map over the context mesh's batch axes, when it helps."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return fn
  axes = tuple(a for a in mesh.axis_names if a in BATCH_AXES)
  shards = math.prod(mesh.shape[a] for a in axes)
  if shards == 1 or batch % shards:
    return fn  # One device, or a sub-batch that does not divide: as is.
  spec = PartitionSpec(axes)
  # check_vma=False: the Pallas kernels' outputs carry no varying-axes type.
  return jax.shard_map(fn, mesh=mesh, in_specs=(spec,) * 3, out_specs=spec,
                       check_vma=False)


ATTENTION_IMPLS: dict[str, AttentionFn] = {
    'xla': xla_attention,
    'cudnn': cudnn_attention,
    'pallas': pallas_attention,
}

# Implementations through which `jax.jvp` works.
FORWARD_MODE_IMPLS: set[str] = {'xla', 'pallas'}


def register_attention(
    name: str, fn: AttentionFn, *, forward_mode: bool = False) -> None:
  """Adds an implementation under `name` (e.g. the Pallas kernel as 'pallas').

  Args:
    name: the value of a network's `attention` field that selects `fn`.
    fn: `fn(q, k, v) -> out` with the layout of `xla_attention`.
    forward_mode: whether `jax.jvp` works through `fn`.
  """
  ATTENTION_IMPLS[name] = fn
  if forward_mode:
    FORWARD_MODE_IMPLS.add(name)
  else:
    FORWARD_MODE_IMPLS.discard(name)


def _check_known(impl: str) -> None:
  if impl not in ATTENTION_IMPLS:
    raise ValueError(
        f'unknown attention impl {impl!r}; known: {sorted(ATTENTION_IMPLS)}')


def require_forward_mode(impl: str) -> None:
  """Raises ValueError unless `jax.jvp` works through attention `impl`."""
  _check_known(impl)
  if impl not in FORWARD_MODE_IMPLS:
    raise ValueError(
        f'attention impl {impl!r} has no forward-mode derivative, which this '
        f'method needs (it takes jax.jvp through the network); use one of '
        f'{sorted(FORWARD_MODE_IMPLS)}')


def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, *, impl: str = 'xla'
) -> jax.Array:
  """Scaled dot-product attention with the implementation named `impl`.

  Args:
    q: [B, Nq, heads, head_dim].
    k: [B, Nk, heads, head_dim].
    v: [B, Nk, heads, head_dim].
    impl: a key of `ATTENTION_IMPLS`.

  Returns:
    [B, Nq, heads, head_dim].
  """
  _check_known(impl)
  return ATTENTION_IMPLS[impl](q, k, v)

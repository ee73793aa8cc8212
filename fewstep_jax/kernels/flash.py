"""`flash_attention`: Pallas attention with forward, backward and JVP kernels.

The attention kernels that ship with JAX are `custom_vjp` functions, so
`jax.jvp` cannot pass through them; sCM and MeanFlow need exactly that through
every attention layer. This op is a `jax.custom_jvp` instead:

* its rule calls the op itself for the primal (O and the log-sum-exp L), so an
  outer `jax.grad` differentiates the primal through the same rule;
* the tangent (dO, dL) comes from the JVP kernel, wrapped in
  `jax.custom_derivatives.linear_call` with the flash backward as its transpose
  (a cotangent gL on L shifts the backward's delta = rowsum(O∘gO) by -gL).

So `jax.jvp`, `jax.grad`, `jax.vjp`, and `jax.grad` of a loss that
stop-gradients a JVP tangent (sCM, MeanFlow) all run on kernels: a grad-of-JVP
step launches one forward, one JVP and one backward kernel set.

Not supported: derivatives of a tangent with respect to q, k, v (second order
in the primal). The kernels treat q, k, v, O, L as constants of the tangent
map, so such a derivative would silently miss terms; instead a gradient that
flows back through a tangent raises `NotImplementedError`, and forward over
forward (jvp of jvp) gives NaN (see `_guard_tangent_gradient`). Stop-gradient
the tangent, as the consistency and flow-map losses do; derivatives with
respect to the tangent direction itself are exact.

Layout `[batch, seq, heads, head_dim]`; queries and keys may differ in length;
float32 or bfloat16 inputs, float32 accumulation.
"""

import dataclasses
import functools
import math
from types import ModuleType
from typing import Sequence

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jax.custom_derivatives import linear_call

from fewstep_jax.kernels import block_math
from fewstep_jax.kernels import flash_gpu
from fewstep_jax.kernels import flash_tpu
from fewstep_jax.kernels import linear_call_batching  # pylint: disable=unused-import


@dataclasses.dataclass(frozen=True)
class Backend:
  """A kernel family: module with `forward`, `jvp`, `backward`.

  Attributes:
    kernels: the module.
    row_column: whether the kernels hold per-row arrays (L, dL, delta) as
      [B, H, N, 1] (TPU tiling) rather than [B, H, N].
    row_multiple: what block sizes must be multiples of on this backend.
  """
  kernels: ModuleType
  row_column: bool
  row_multiple: int


BACKENDS: dict[str, Backend] = {
    'gpu': Backend(flash_gpu, row_column=False, row_multiple=16),
    'tpu': Backend(flash_tpu, row_column=True, row_multiple=8),
}


@dataclasses.dataclass(frozen=True)
class _Call:
  """The static arguments of one `flash_attention` call (hashable)."""
  backend: str
  causal: bool
  sm_scale: float
  block_q: int
  block_k: int
  interpret: bool
  num_warps: int
  num_stages: int


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _tiles(call: _Call, n: int, m: int) -> block_math.TileConfig:
  """Block sizes clamped to the (padded) sequence lengths."""
  multiple = BACKENDS[call.backend].row_multiple
  block_q = min(call.block_q, _round_up(n, multiple))
  block_k = min(call.block_k, _round_up(m, multiple))
  return block_math.TileConfig(
      sm_scale=call.sm_scale, causal=call.causal, kv_len=m,
      padded_kv_len=_round_up(m, block_k), block_q=block_q, block_k=block_k,
      interpret=call.interpret, num_warps=call.num_warps,
      num_stages=call.num_stages)


def _to_kernel(x: jax.Array, padded: int) -> jax.Array:
  """[B, N, H, d] -> [B, H, padded, d], zero rows appended."""
  x = jnp.swapaxes(x, 1, 2)
  pad = padded - x.shape[2]
  return jnp.pad(x, ((0, 0), (0, 0), (0, pad), (0, 0))) if pad else x


def _from_kernel(x: jax.Array, n: int) -> jax.Array:
  """[B, H, padded, d] -> [B, n, H, d]."""
  return jnp.swapaxes(x[:, :, :n], 1, 2)


def _rows_to_kernel(x: jax.Array, padded: int, backend: Backend) -> jax.Array:
  """Per-row [B, H, N] -> the backend's padded per-row layout."""
  pad = padded - x.shape[2]
  x = jnp.pad(x, ((0, 0), (0, 0), (0, pad))) if pad else x
  return x[..., None] if backend.row_column else x


def _rows_from_kernel(x: jax.Array, n: int, backend: Backend) -> jax.Array:
  x = x[..., 0] if backend.row_column else x
  return x[:, :, :n]


def _forward(call: _Call, q, k, v):
  """(O [B, N, H, d], L [B, H, N] float32) from the forward kernel."""
  n, m = q.shape[1], k.shape[1]
  tiles = _tiles(call, n, m)
  backend = BACKENDS[call.backend]
  padded_n = _round_up(n, tiles.block_q)
  o, lse = backend.kernels.forward(
      _to_kernel(q, padded_n), _to_kernel(k, tiles.padded_kv_len),
      _to_kernel(v, tiles.padded_kv_len), static=tiles)
  return _from_kernel(o, n), _rows_from_kernel(lse, n, backend)


def _tangent(call: _Call, present, residuals, tangents):
  """(dO, dL): the JVP kernel applied to the non-zero tangents."""
  q, k, v, o, lse = residuals
  n, m = q.shape[1], k.shape[1]
  tiles = _tiles(call, n, m)
  backend = BACKENDS[call.backend]
  padded_n = _round_up(n, tiles.block_q)
  padded_m = tiles.padded_kv_len
  it = iter(tangents)
  dq, dk, dv = (next(it) if p else None for p in present)
  do, dlse = backend.kernels.jvp(
      _to_kernel(q, padded_n), _to_kernel(k, padded_m),
      _to_kernel(v, padded_m), _to_kernel(o, padded_n),
      _rows_to_kernel(lse, padded_n, backend),
      None if dq is None else _to_kernel(dq, padded_n),
      None if dk is None else _to_kernel(dk, padded_m),
      None if dv is None else _to_kernel(dv, padded_m),
      static=tiles)
  return _from_kernel(do, n), _rows_from_kernel(dlse, n, backend)


def _tangent_transpose(call: _Call, present, residuals, cotangents):
  """Transpose of `_tangent`: the flash backward with delta shifted by -gL."""
  q, k, v, o, lse = residuals
  go, glse = cotangents
  n, m = q.shape[1], k.shape[1]
  tiles = _tiles(call, n, m)
  backend = BACKENDS[call.backend]
  padded_n = _round_up(n, tiles.block_q)
  padded_m = tiles.padded_kv_len
  go = go.astype(o.dtype)
  delta = jnp.einsum('bnhd,bnhd->bhn', o.astype(jnp.float32),
                     go.astype(jnp.float32)) - glse
  gq, gk, gv = backend.kernels.backward(
      _to_kernel(q, padded_n), _to_kernel(k, padded_m),
      _to_kernel(v, padded_m), _rows_to_kernel(lse, padded_n, backend),
      _to_kernel(go, padded_n), _rows_to_kernel(delta, padded_n, backend),
      static=tiles)
  grads = (_from_kernel(gq, n), _from_kernel(gk, m), _from_kernel(gv, m))
  return tuple(g for g, p in zip(grads, present) if p)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _attention_with_lse(call: _Call, q, k, v):
  return _forward(call, q, k, v)


def _attention_with_lse_jvp(call: _Call, primals, tangents):
  q, k, v = primals
  o, lse = _attention_with_lse(call, q, k, v)
  present = tuple(not isinstance(t, SymbolicZero) for t in tangents)
  nonzero = tuple(t for t, p in zip(tangents, present) if p)
  # The tangent map is linear in the tangents with (q, k, v, O, L) as
  # constants; linear_call requires those constants to carry no derivative.
  residuals = jax.lax.stop_gradient((q, k, v, o, lse))
  do, dlse = linear_call(
      functools.partial(_tangent, call, present),
      functools.partial(_tangent_transpose, call, present),
      residuals, nonzero)
  do, dlse = _guard_tangent_gradient((do, dlse), (q, k, v))
  return (o, lse), (do, dlse)


_attention_with_lse.defjvp(_attention_with_lse_jvp, symbolic_zeros=True)


_THROUGH_TANGENT_ERROR = (
    'flash_attention: a gradient flows through a JVP tangent back into q, k '
    'or v (a second-order derivative of the primal). The Pallas kernels treat '
    'q, k, v as constants of the tangent map, so this gradient would miss '
    'terms. Wrap the tangent in jax.lax.stop_gradient (as the sCM and '
    'MeanFlow losses do), or use attention impl "xla" for higher-order '
    'derivatives.')


@jax.custom_jvp
def _guard_tangent_gradient(tangent_out, primals):
  """Identity on `tangent_out`; second-order derivatives through it are refused.

  Its JVP w.r.t. `primals` (q, k, v) is a `linear_call` standing for the terms
  the kernels cannot provide:
  * reverse mode: its transpose raises. A first-order `jax.jvp`, and a `grad`
    whose loss stop-gradients the tangent, never transpose it (the cotangent
    reaching it is zero and the equation is dropped); a gradient that flows
    back through the tangent into q, k, v does, and gets the error.
  * forward over forward (`jax.jvp` of a `jax.jvp`, `jax.hessian`): the
    linear map is evaluated, and returns NaN, so the missing terms cannot pass
    for numbers.
  """
  del primals
  return tangent_out


@_guard_tangent_gradient.defjvp
def _guard_jvp(primals, tangents):
  tangent_out, _ = primals
  d_tangent_out, d_primals_in = tangents
  shapes = [(x.shape, x.dtype) for x in jax.tree.leaves(tangent_out)]

  def unknown(unused_residuals, unused_d_primals_in):
    return jax.tree.unflatten(jax.tree.structure(tangent_out),
                              [jnp.full(s, jnp.nan, d) for s, d in shapes])

  missing = linear_call(unknown, _raise_through_tangent, (), d_primals_in)
  return tangent_out, jax.tree.map(jnp.add, d_tangent_out, missing)


def _raise_through_tangent(unused_residuals, unused_cotangent):
  raise NotImplementedError(_THROUGH_TANGENT_ERROR)


def flash_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, *,
    causal: bool = False,
    sm_scale: float | None = None,
    backend: str = 'gpu',
    block_q: int = 128,
    block_k: int = 128,
    interpret: bool = False,
    num_warps: int = 4,
    num_stages: int = 2,
) -> jax.Array:
  """softmax(s q k^T) v with Pallas kernels for forward, JVP and backward.

  Args:
    q: [batch, seq_q, heads, head_dim].
    k: [batch, seq_k, heads, head_dim].
    v: [batch, seq_k, heads, head_dim].
    causal: key j is visible to query i iff j <= i.
    sm_scale: the logit scale s; default head_dim ** -0.5.
    backend: a key of `BACKENDS` ('gpu': Triton lowering, 'tpu': Mosaic).
    block_q, block_k: tile rows along queries / keys (clamped to the padded
      sequence lengths; sequences are zero-padded to multiples of them and
      padded keys masked).
    interpret: run the kernels in interpret mode (CPU tests). For 'tpu' this is
      the TPU interpreter, as under `pltpu.force_tpu_interpret_mode()`.
    num_warps, num_stages: Triton launch settings ('gpu' only).

  Returns:
    [batch, seq_q, heads, head_dim] in q's dtype.
  """
  if backend not in BACKENDS:
    raise ValueError(
        f'unknown flash_attention backend {backend!r}; known: '
        f'{sorted(BACKENDS)}')
  _check_inputs(q, k, v)
  multiple = BACKENDS[backend].row_multiple
  for name, block in (('block_q', block_q), ('block_k', block_k)):
    if block <= 0 or block % multiple:
      raise ValueError(
          f'flash_attention: {name}={block} must be a positive multiple of '
          f'{multiple} on backend {backend!r}')
  if sm_scale is None:
    sm_scale = 1.0 / math.sqrt(q.shape[-1])
  call = _Call(backend=backend, causal=causal, sm_scale=float(sm_scale),
               block_q=block_q, block_k=block_k, interpret=interpret,
               num_warps=num_warps, num_stages=num_stages)
  o, _ = _attention_with_lse(call, q, k, v)
  return o


def _check_inputs(q, k, v) -> None:
  for name, x in (('q', q), ('k', k), ('v', v)):
    if x.ndim != 4:
      raise ValueError(
          f'flash_attention: {name} must be [batch, seq, heads, head_dim], '
          f'got shape {x.shape}')
    if x.dtype not in (jnp.float32, jnp.bfloat16):
      raise ValueError(
          f'flash_attention: {name} must be float32 or bfloat16, got '
          f'{x.dtype}')
  if k.shape != v.shape:
    raise ValueError(
        f'flash_attention: k and v shapes differ: {k.shape} vs {v.shape}')
  if (q.shape[0], q.shape[2], q.shape[3]) != (k.shape[0], k.shape[2],
                                              k.shape[3]):
    raise ValueError(
        'flash_attention: q and k must agree on batch, heads and head_dim, '
        f'got {q.shape} and {k.shape}')

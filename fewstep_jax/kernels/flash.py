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
  """A kernel family (a module with `forward`, `jvp`, `backward`) and its shape rules.

  Attributes:
    kernels: the module.
    row_column: whether the kernels hold per-row arrays (L, dL, delta) as
      [B, H, N, 1] (TPU tiling) rather than [B, H, N].
    block_q_multiple, block_k_multiple: what tile rows must be multiples of.
    power_of_two: tiles and head_dim must be powers of two (Triton); head_dim
      is zero-padded to one, and to at least 16 (the smallest Triton dot).
  """
  kernels: ModuleType
  row_column: bool
  block_q_multiple: int
  block_k_multiple: int
  power_of_two: bool


BACKENDS: dict[str, Backend] = {
    'gpu': Backend(flash_gpu, row_column=False, block_q_multiple=16,
                   block_k_multiple=16, power_of_two=True),
    # Query tiles of 16 rows fill a bfloat16 (16, 128) vreg tile; key tiles of
    # 128 make the score tile lane-dense.
    'tpu': Backend(flash_tpu, row_column=True, block_q_multiple=16,
                   block_k_multiple=128, power_of_two=False),
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
  num_warps: int | None
  num_stages: int


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _next_power_of_two(n: int) -> int:
  return 1 << max(0, n - 1).bit_length()


@dataclasses.dataclass(frozen=True)
class _Layout:
  """How one call's arrays are padded for the kernels."""
  tiles: block_math.TileConfig
  n: int          # queries
  m: int          # keys
  d: int          # head_dim
  padded_n: int
  padded_d: int


def _layout(call: _Call, n: int, m: int, d: int) -> _Layout:
  """Tiles clamped to the sequence lengths; padded lengths and head_dim."""
  backend = BACKENDS[call.backend]
  if backend.power_of_two:
    block_q = min(call.block_q, _next_power_of_two(max(n, 16)))
    block_k = min(call.block_k, _next_power_of_two(max(m, 16)))
    padded_d = _next_power_of_two(max(d, 16))
  else:
    block_q = min(call.block_q, _round_up(n, backend.block_q_multiple))
    block_k = min(call.block_k, _round_up(m, backend.block_k_multiple))
    padded_d = d
  num_warps = call.num_warps or (4 if padded_d <= 64 else 8)
  tiles = block_math.TileConfig(
      sm_scale=call.sm_scale, causal=call.causal, kv_len=m,
      padded_kv_len=_round_up(m, block_k), block_q=block_q, block_k=block_k,
      interpret=call.interpret, num_warps=num_warps,
      num_stages=call.num_stages)
  return _Layout(tiles=tiles, n=n, m=m, d=d, padded_n=_round_up(n, block_q),
                 padded_d=padded_d)


def _to_kernel(x: jax.Array, rows: int, head_dim: int) -> jax.Array:
  """[B, N, H, d] -> [B, H, rows, head_dim], zero rows and columns appended.

  Zero columns change no dot product, and the kernels' outputs in them are
  sliced off; zero rows are masked (keys) or sliced off (queries).
  """
  x = jnp.swapaxes(x, 1, 2)
  pad_rows, pad_d = rows - x.shape[2], head_dim - x.shape[3]
  if pad_rows or pad_d:
    x = jnp.pad(x, ((0, 0), (0, 0), (0, pad_rows), (0, pad_d)))
  return x


def _from_kernel(x: jax.Array, n: int, d: int) -> jax.Array:
  """[B, H, rows, head_dim] -> [B, n, H, d]."""
  return jnp.swapaxes(x[:, :, :n, :d], 1, 2)


def _rows_to_kernel(x: jax.Array, padded: int, backend: Backend) -> jax.Array:
  """Per-row [B, H, N] -> the backend's padded per-row layout."""
  pad = padded - x.shape[2]
  x = jnp.pad(x, ((0, 0), (0, 0), (0, pad))) if pad else x
  return x[..., None] if backend.row_column else x


def _rows_from_kernel(x: jax.Array, n: int, backend: Backend) -> jax.Array:
  x = x[..., 0] if backend.row_column else x
  return x[:, :, :n]


def _prepare(call: _Call, q, k):
  """The layout, the backend, and padders for query- and key-length arrays."""
  lay = _layout(call, q.shape[1], k.shape[1], q.shape[3])
  queries = lambda x: _to_kernel(x, lay.padded_n, lay.padded_d)
  keys = lambda x: _to_kernel(x, lay.tiles.padded_kv_len, lay.padded_d)
  return lay, BACKENDS[call.backend], queries, keys


def _forward(call: _Call, q, k, v):
  """(O [B, N, H, d], L [B, H, N] float32) from the forward kernel."""
  lay, backend, queries, keys = _prepare(call, q, k)
  o, lse = backend.kernels.forward(queries(q), keys(k), keys(v),
                                   static=lay.tiles)
  return _from_kernel(o, lay.n, lay.d), _rows_from_kernel(lse, lay.n, backend)


def _tangent(call: _Call, present, residuals, tangents):
  """(dO, dL): the JVP kernel applied to the non-zero tangents."""
  q, k, v, o, lse = residuals
  lay, backend, queries, keys = _prepare(call, q, k)
  it = iter(tangents)
  dq, dk, dv = (next(it) if p else None for p in present)
  do, dlse = backend.kernels.jvp(
      queries(q), keys(k), keys(v), queries(o),
      _rows_to_kernel(lse, lay.padded_n, backend),
      None if dq is None else queries(dq),
      None if dk is None else keys(dk),
      None if dv is None else keys(dv),
      static=lay.tiles)
  return (_from_kernel(do, lay.n, lay.d),
          _rows_from_kernel(dlse, lay.n, backend))


def _tangent_transpose(call: _Call, present, residuals, cotangents):
  """Transpose of `_tangent`: the flash backward with delta shifted by -gL."""
  q, k, v, o, lse = residuals
  go, glse = cotangents
  lay, backend, queries, keys = _prepare(call, q, k)
  go = go.astype(o.dtype)
  delta = jnp.einsum('bnhd,bnhd->bhn', o.astype(jnp.float32),
                     go.astype(jnp.float32)) - glse
  gq, gk, gv = backend.kernels.backward(
      queries(q), keys(k), keys(v),
      _rows_to_kernel(lse, lay.padded_n, backend), queries(go),
      _rows_to_kernel(delta, lay.padded_n, backend), static=lay.tiles)
  grads = (_from_kernel(gq, lay.n, lay.d), _from_kernel(gk, lay.m, lay.d),
           _from_kernel(gv, lay.m, lay.d))
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
    num_warps: int | None = None,
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
    block_q, block_k: tile rows along queries / keys: powers of two (at least
      16) on 'gpu'; multiples of 16 and 128 on 'tpu'. Clamped to the sequence
      lengths; sequences are zero-padded to multiples of them and padded keys
      masked. On 'gpu' head_dim is zero-padded to a power of two >= 16.
    interpret: run the kernels in Pallas's generic interpreter (CPU tests).
      For the TPU simulator (VMEM, DMAs, grid order) call the op under
      `pltpu.force_tpu_interpret_mode()` instead; it runs eagerly only, since
      its ordered callbacks cannot be lowered inside `linear_call` under jit.
    num_warps: Triton warps ('gpu' only); default 4 for head_dim <= 64, else
      8 (the JVP and dK/dV kernels hold two float32 [block, d] accumulators).
    num_stages: Triton pipeline stages ('gpu' only).

  Returns:
    [batch, seq_q, heads, head_dim] in q's dtype.
  """
  if backend not in BACKENDS:
    raise ValueError(
        f'unknown flash_attention backend {backend!r}; known: '
        f'{sorted(BACKENDS)}')
  _check_inputs(q, k, v)
  rules = BACKENDS[backend]
  for name, block, multiple in (('block_q', block_q, rules.block_q_multiple),
                                ('block_k', block_k, rules.block_k_multiple)):
    if block <= 0 or block % multiple or (
        rules.power_of_two and block & (block - 1)):
      kind = 'power of two >= 16' if rules.power_of_two else (
          f'positive multiple of {multiple}')
      raise ValueError(
          f'flash_attention: {name}={block} must be a {kind} on backend '
          f'{backend!r}')
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
  if not q.dtype == k.dtype == v.dtype:
    raise ValueError(
        f'flash_attention: q, k and v must share a dtype, got {q.dtype}, '
        f'{k.dtype} and {v.dtype}')
  if k.shape != v.shape:
    raise ValueError(
        f'flash_attention: k and v shapes differ: {k.shape} vs {v.shape}')
  if (q.shape[0], q.shape[2], q.shape[3]) != (k.shape[0], k.shape[2],
                                              k.shape[3]):
    raise ValueError(
        'flash_attention: q and k must agree on batch, heads and head_dim, '
        f'got {q.shape} and {k.shape}')

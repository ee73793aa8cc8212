"""Flash attention kernels for GPU (Pallas, Triton lowering).

Layout inside this module is [batch, heads, seq, head_dim] with both sequence
lengths padded to multiples of the block sizes (`flash.py` does the
transposes and the padding). One program handles one query (or key) tile of
one (batch, head) pair and loops over the other sequence inside the kernel, as
Triton kernels do; the whole key (or query) sequence of that pair is the
program's block and tiles are sliced from it.

Kernels:
  forward:  online softmax; writes O and L = logsumexp(S).          4NMd FLOPs
  jvp:      dO = P dV + (P∘dS) V - r∘O and dL = r, P from the saved L. 10NMd
  backward: dK/dV pass (grid over key tiles) and dQ pass (grid over
            query tiles); with a cotangent gL on L, delta = rowsum(O∘gO) - gL.
                                                                      14NMd
With `causal`, tiles entirely above the diagonal are skipped by the loop bounds.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from fewstep_jax.kernels import block_math as bm

_KEEPDIMS = False  # Triton: row statistics as vectors.


def _params(num_warps: int, num_stages: int):
  return plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages)


def _num_key_tiles(q_start, block_q, block_k, num_k_tiles, causal):
  """Key tiles a query tile needs: all, or up to the diagonal if causal."""
  if not causal:
    return num_k_tiles
  return jnp.minimum(num_k_tiles, pl.cdiv(q_start + block_q, block_k))


def _first_query_tile(k_start, block_q, causal):
  """First query tile that sees a key tile (0 unless causal)."""
  return k_start // block_q if causal else 0


def _mask(q_start, k_start, shape, static):
  return bm.key_mask(shape, q_start, k_start, causal=static.causal,
                     kv_len=static.kv_len,
                     padded_kv_len=static.padded_kv_len)


def _forward_kernel(q_ref, k_ref, v_ref, o_ref, lse_ref, *, static):
  block_q, head_dim = q_ref.shape
  block_k = static.block_k
  q_start = pl.program_id(0) * block_q
  q = q_ref[...]

  def body(j, carry):
    acc, m, l = carry
    k_start = j * block_k
    k = k_ref[pl.ds(k_start, block_k), :]
    v = v_ref[pl.ds(k_start, block_k), :]
    s = bm.scores(q, k, sm_scale=static.sm_scale,
                  mask=_mask(q_start, k_start, (block_q, block_k), static))
    return bm.online_softmax_step(acc, m, l, s, v, keepdims=_KEEPDIMS)

  init = (jnp.zeros((block_q, head_dim), jnp.float32),
          jnp.full((block_q,), bm.MASK_VALUE, jnp.float32),
          jnp.zeros((block_q,), jnp.float32))
  num_tiles = _num_key_tiles(q_start, block_q, block_k,
                             k_ref.shape[0] // block_k, static.causal)
  acc, m, l = lax.fori_loop(0, num_tiles, body, init)
  o_ref[...] = (acc / l[:, None]).astype(o_ref.dtype)
  lse_ref[...] = m + jnp.log(l)


def _jvp_kernel(*refs, static, has):
  has_dq, has_dk, has_dv = has
  it = iter(refs)
  q_ref, k_ref, v_ref, o_ref, lse_ref = (next(it) for _ in range(5))
  dq_ref = next(it) if has_dq else None
  dk_ref = next(it) if has_dk else None
  dv_ref = next(it) if has_dv else None
  do_ref, dlse_ref = next(it), next(it)

  block_q, head_dim = q_ref.shape
  block_k = static.block_k
  q_start = pl.program_id(0) * block_q
  q = q_ref[...]
  lse = lse_ref[...]
  dq = dq_ref[...] if has_dq else None

  def body(j, carry):
    acc, r = carry
    k_start = j * block_k
    rows = pl.ds(k_start, block_k)
    k = k_ref[rows, :]
    v = v_ref[rows, :]
    s = bm.scores(q, k, sm_scale=static.sm_scale,
                  mask=_mask(q_start, k_start, (block_q, block_k), static))
    p = bm.probabilities(s, lse, _KEEPDIMS)
    ds = None
    if has_dq or has_dk:
      ds = bm.tangent_scores(q, k, dq, dk_ref[rows, :] if has_dk else None,
                             sm_scale=static.sm_scale)
    dv = dv_ref[rows, :] if has_dv else None
    return bm.jvp_step(acc, r, p, ds, v, dv, keepdims=_KEEPDIMS)

  init = (jnp.zeros((block_q, head_dim), jnp.float32),
          jnp.zeros((block_q,), jnp.float32))
  num_tiles = _num_key_tiles(q_start, block_q, block_k,
                             k_ref.shape[0] // block_k, static.causal)
  acc, r = lax.fori_loop(0, num_tiles, body, init)
  o = o_ref[...].astype(jnp.float32)
  do_ref[...] = (acc - r[:, None] * o).astype(do_ref.dtype)
  dlse_ref[...] = r


def _dkdv_kernel(q_ref, k_ref, v_ref, lse_ref, go_ref, delta_ref,
                 dk_ref, dv_ref, *, static):
  block_k, head_dim = k_ref.shape
  block_q = static.block_q
  k_start = pl.program_id(0) * block_k
  k = k_ref[...]
  v = v_ref[...]

  def body(i, carry):
    dk, dv = carry
    q_start = i * block_q
    rows = pl.ds(q_start, block_q)
    q = q_ref[rows, :]
    go = go_ref[rows, :]
    s = bm.scores(q, k, sm_scale=static.sm_scale,
                  mask=_mask(q_start, k_start, (block_q, block_k), static))
    p = bm.probabilities(s, lse_ref[rows], _KEEPDIMS)
    dv = dv + bm.dot_tn(p.astype(go.dtype), go)
    gs = bm.score_cotangent(p, go, v, delta_ref[rows], _KEEPDIMS)
    dk = dk + bm.dot_tn(gs.astype(q.dtype), q)
    return dk, dv

  init = (jnp.zeros((block_k, head_dim), jnp.float32),
          jnp.zeros((block_k, head_dim), jnp.float32))
  dk, dv = lax.fori_loop(_first_query_tile(k_start, block_q, static.causal),
                         q_ref.shape[0] // block_q, body, init)
  dk_ref[...] = (dk * static.sm_scale).astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(q_ref, k_ref, v_ref, lse_ref, go_ref, delta_ref, dq_ref, *,
               static):
  block_q, head_dim = q_ref.shape
  block_k = static.block_k
  q_start = pl.program_id(0) * block_q
  q = q_ref[...]
  go = go_ref[...]
  lse = lse_ref[...]
  delta = delta_ref[...]

  def body(j, dq):
    k_start = j * block_k
    rows = pl.ds(k_start, block_k)
    k = k_ref[rows, :]
    s = bm.scores(q, k, sm_scale=static.sm_scale,
                  mask=_mask(q_start, k_start, (block_q, block_k), static))
    p = bm.probabilities(s, lse, _KEEPDIMS)
    gs = bm.score_cotangent(p, go, v_ref[rows, :], delta, _KEEPDIMS)
    return dq + bm.dot(gs.astype(k.dtype), k)

  num_tiles = _num_key_tiles(q_start, block_q, block_k,
                             k_ref.shape[0] // block_k, static.causal)
  dq = lax.fori_loop(0, num_tiles, body,
                     jnp.zeros((block_q, head_dim), jnp.float32))
  dq_ref[...] = (dq * static.sm_scale).astype(dq_ref.dtype)


def _tile_spec(block, head_dim):
  """One tile of rows of one (batch, head): grid (tile, batch, head)."""
  return pl.BlockSpec((None, None, block, head_dim),
                      lambda t, b, h: (b, h, t, 0))


def _row_spec(block):
  return pl.BlockSpec((None, None, block), lambda t, b, h: (b, h, t))


def _whole_spec(length, head_dim):
  """All rows of one (batch, head), whatever the tile."""
  return pl.BlockSpec((None, None, length, head_dim),
                      lambda t, b, h: (b, h, 0, 0))


def _whole_row_spec(length):
  return pl.BlockSpec((None, None, length), lambda t, b, h: (b, h, 0))


def forward(q, k, v, *, static):
  """O [B, H, N, d] in q's dtype and L [B, H, N] float32."""
  batch, heads, n, d = q.shape
  m = k.shape[2]
  block_q = static.block_q
  return pl.pallas_call(
      functools.partial(_forward_kernel, static=static),
      grid=(n // block_q, batch, heads),
      in_specs=[_tile_spec(block_q, d), _whole_spec(m, d), _whole_spec(m, d)],
      out_specs=[_tile_spec(block_q, d), _row_spec(block_q)],
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype),
                 jax.ShapeDtypeStruct((batch, heads, n), jnp.float32)],
      compiler_params=_params(static.num_warps, static.num_stages),
      interpret=static.interpret,
      name='flash_forward',
  )(q, k, v)


def jvp(q, k, v, o, lse, dq, dk, dv, *, static):
  """(dO [B, H, N, d], dL [B, H, N]); any of dq, dk, dv may be None (zero)."""
  batch, heads, n, d = q.shape
  m = k.shape[2]
  block_q = static.block_q
  has = (dq is not None, dk is not None, dv is not None)
  operands = [q, k, v, o, lse]
  specs = [_tile_spec(block_q, d), _whole_spec(m, d), _whole_spec(m, d),
           _tile_spec(block_q, d), _row_spec(block_q)]
  for tangent, spec in ((dq, _tile_spec(block_q, d)), (dk, _whole_spec(m, d)),
                        (dv, _whole_spec(m, d))):
    if tangent is not None:
      operands.append(tangent)
      specs.append(spec)
  return pl.pallas_call(
      functools.partial(_jvp_kernel, static=static, has=has),
      grid=(n // block_q, batch, heads),
      in_specs=specs,
      out_specs=[_tile_spec(block_q, d), _row_spec(block_q)],
      out_shape=[jax.ShapeDtypeStruct(o.shape, o.dtype),
                 jax.ShapeDtypeStruct((batch, heads, n), jnp.float32)],
      compiler_params=_params(static.num_warps, static.num_stages),
      interpret=static.interpret,
      name='flash_jvp',
  )(*operands)


def backward(q, k, v, lse, go, delta, *, static):
  """(gQ, gK, gV) given the cotangent gO and delta = rowsum(O∘gO) - gL."""
  batch, heads, n, d = q.shape
  m = k.shape[2]
  block_q, block_k = static.block_q, static.block_k
  params = _params(static.num_warps, static.num_stages)
  gk, gv = pl.pallas_call(
      functools.partial(_dkdv_kernel, static=static),
      grid=(m // block_k, batch, heads),
      in_specs=[_whole_spec(n, d), _tile_spec(block_k, d),
                _tile_spec(block_k, d), _whole_row_spec(n), _whole_spec(n, d),
                _whole_row_spec(n)],
      out_specs=[_tile_spec(block_k, d), _tile_spec(block_k, d)],
      out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype),
                 jax.ShapeDtypeStruct(v.shape, v.dtype)],
      compiler_params=params,
      interpret=static.interpret,
      name='flash_backward_dkdv',
  )(q, k, v, lse, go, delta)
  gq = pl.pallas_call(
      functools.partial(_dq_kernel, static=static),
      grid=(n // block_q, batch, heads),
      in_specs=[_tile_spec(block_q, d), _whole_spec(m, d), _whole_spec(m, d),
                _row_spec(block_q), _tile_spec(block_q, d), _row_spec(block_q)],
      out_specs=_tile_spec(block_q, d),
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      compiler_params=params,
      interpret=static.interpret,
      name='flash_backward_dq',
  )(q, k, v, lse, go, delta)
  return gq, gk, gv

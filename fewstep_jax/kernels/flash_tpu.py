"""Flash attention kernels for TPU (Pallas, Mosaic lowering).

Same arithmetic as `flash_gpu.py` (both call `block_math`), arranged the way
Mosaic pipelines it: the grid is (batch, head, outer tile, inner tile), the
inner axis is a sequential reduction ("arbitrary"), each step gets one query
tile and one key tile as blocks (double-buffered DMAs into VMEM), and running
statistics live in VMEM scratch, initialised on the first inner step and
written out on the last. Row statistics are [rows, 1] columns, and the
log-sum-exp and delta arrays are [B, H, N, 1] so that every block's last two
dimensions are legal TPU tiles.

With `causal`, tiles entirely above the diagonal skip their arithmetic and
their index maps repeat the previous block, so Pallas skips the copy too.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from fewstep_jax.kernels import block_math as bm

_KEEPDIMS = True  # Mosaic: row statistics as [rows, 1] columns.


def _last_key_tile(q_tile, static):
  """Last key tile a query tile sees (clamps causal index maps)."""
  last = static.padded_kv_len // static.block_k - 1
  if not static.causal:
    return last
  # lax.div, not //: the indices are non-negative, and Mosaic lowers a
  # truncating division without the sign fix-ups of floor division.
  return jnp.minimum(
      last, lax.div((q_tile + 1) * static.block_q - 1, static.block_k))


def _first_query_tile(k_tile, static, num_q_tiles):
  """First query tile that sees a key tile (clamps causal index maps).

  Kept inside the grid: a key tile past the last query sees no query, and its
  steps all skip their arithmetic.
  """
  if not static.causal:
    return 0
  return jnp.minimum(num_q_tiles - 1,
                     lax.div(k_tile * static.block_k, static.block_q))


def _visible(q_start, k_start, static):
  """Whether any (query, key) pair of the tile pair is unmasked."""
  if not static.causal:
    return True
  return k_start <= q_start + static.block_q - 1


def _mask(q_start, k_start, static):
  return bm.key_mask((static.block_q, static.block_k), q_start, k_start,
                     causal=static.causal, kv_len=static.kv_len,
                     padded_kv_len=static.padded_kv_len)


def _interpret(static):
  """Pallas's generic interpreter when asked for.

  The TPU simulator (`pltpu.force_tpu_interpret_mode()`, which overrides this)
  runs eagerly only: its ordered callbacks cannot be lowered inside the
  `linear_call` that carries the JVP under jit.
  """
  return bool(static.interpret)


def _compiler_params():
  return pltpu.CompilerParams(
      dimension_semantics=('parallel', 'parallel', 'parallel', 'arbitrary'))


def _forward_kernel(q_ref, k_ref, v_ref, o_ref, lse_ref, acc_ref, m_ref,
                    l_ref, *, static):
  i, j = pl.program_id(2), pl.program_id(3)
  q_start, k_start = i * static.block_q, j * static.block_k

  @pl.when(j == 0)
  def _():
    acc_ref[...] = jnp.zeros_like(acc_ref)
    m_ref[...] = jnp.full_like(m_ref, bm.MASK_VALUE)
    l_ref[...] = jnp.zeros_like(l_ref)

  @pl.when(_visible(q_start, k_start, static))
  def _():
    s = bm.scores(q_ref[...], k_ref[...], sm_scale=static.sm_scale,
                  mask=_mask(q_start, k_start, static))
    acc, m, l = bm.online_softmax_step(
        acc_ref[...], m_ref[...], l_ref[...], s, v_ref[...],
        keepdims=_KEEPDIMS)
    acc_ref[...], m_ref[...], l_ref[...] = acc, m, l

  @pl.when(j == pl.num_programs(3) - 1)
  def _():
    o_ref[...] = (acc_ref[...] / l_ref[...]).astype(o_ref.dtype)
    lse_ref[...] = m_ref[...] + jnp.log(l_ref[...])


def _jvp_kernel(*refs, static, has):
  has_dq, has_dk, has_dv = has
  it = iter(refs)
  q_ref, k_ref, v_ref, o_ref, lse_ref = (next(it) for _ in range(5))
  dq_ref = next(it) if has_dq else None
  dk_ref = next(it) if has_dk else None
  dv_ref = next(it) if has_dv else None
  do_ref, dlse_ref, acc_ref, r_ref = it
  i, j = pl.program_id(2), pl.program_id(3)
  q_start, k_start = i * static.block_q, j * static.block_k

  @pl.when(j == 0)
  def _():
    acc_ref[...] = jnp.zeros_like(acc_ref)
    r_ref[...] = jnp.zeros_like(r_ref)

  @pl.when(_visible(q_start, k_start, static))
  def _():
    q, k = q_ref[...], k_ref[...]
    s = bm.scores(q, k, sm_scale=static.sm_scale,
                  mask=_mask(q_start, k_start, static))
    p = bm.probabilities(s, lse_ref[...], _KEEPDIMS)
    ds = None
    if has_dq or has_dk:
      ds = bm.tangent_scores(q, k, dq_ref[...] if has_dq else None,
                             dk_ref[...] if has_dk else None,
                             sm_scale=static.sm_scale)
    acc, r = bm.jvp_step(acc_ref[...], r_ref[...], p, ds, v_ref[...],
                         dv_ref[...] if has_dv else None, keepdims=_KEEPDIMS)
    acc_ref[...], r_ref[...] = acc, r

  @pl.when(j == pl.num_programs(3) - 1)
  def _():
    o = o_ref[...].astype(jnp.float32)
    do_ref[...] = (acc_ref[...] - r_ref[...] * o).astype(do_ref.dtype)
    dlse_ref[...] = r_ref[...]


def _dkdv_kernel(q_ref, k_ref, v_ref, lse_ref, go_ref, delta_ref, dk_ref,
                 dv_ref, dk_acc, dv_acc, *, static):
  j, i = pl.program_id(2), pl.program_id(3)
  q_start, k_start = i * static.block_q, j * static.block_k

  @pl.when(i == 0)
  def _():
    dk_acc[...] = jnp.zeros_like(dk_acc)
    dv_acc[...] = jnp.zeros_like(dv_acc)

  @pl.when(_visible(q_start, k_start, static))
  def _():
    q, go = q_ref[...], go_ref[...]
    s = bm.scores(q, k_ref[...], sm_scale=static.sm_scale,
                  mask=_mask(q_start, k_start, static))
    p = bm.probabilities(s, lse_ref[...], _KEEPDIMS)
    dv_acc[...] += bm.dot_tn(p.astype(go.dtype), go)
    gs = bm.score_cotangent(p, go, v_ref[...], delta_ref[...], _KEEPDIMS)
    dk_acc[...] += bm.dot_tn(gs.astype(q.dtype), q)

  @pl.when(i == pl.num_programs(3) - 1)
  def _():
    dk_ref[...] = (dk_acc[...] * static.sm_scale).astype(dk_ref.dtype)
    dv_ref[...] = dv_acc[...].astype(dv_ref.dtype)


def _dq_kernel(q_ref, k_ref, v_ref, lse_ref, go_ref, delta_ref, dq_ref,
               dq_acc, *, static):
  i, j = pl.program_id(2), pl.program_id(3)
  q_start, k_start = i * static.block_q, j * static.block_k

  @pl.when(j == 0)
  def _():
    dq_acc[...] = jnp.zeros_like(dq_acc)

  @pl.when(_visible(q_start, k_start, static))
  def _():
    k = k_ref[...]
    s = bm.scores(q_ref[...], k, sm_scale=static.sm_scale,
                  mask=_mask(q_start, k_start, static))
    p = bm.probabilities(s, lse_ref[...], _KEEPDIMS)
    gs = bm.score_cotangent(p, go_ref[...], v_ref[...], delta_ref[...],
                            _KEEPDIMS)
    dq_acc[...] += bm.dot(gs.astype(k.dtype), k)

  @pl.when(j == pl.num_programs(3) - 1)
  def _():
    dq_ref[...] = (dq_acc[...] * static.sm_scale).astype(dq_ref.dtype)


def _query_specs(static, d):
  """Specs for grid (b, h, query tile i, key tile j)."""
  q_tile = pl.BlockSpec((None, None, static.block_q, d),
                        lambda b, h, i, j: (b, h, i, 0))
  q_rows = pl.BlockSpec((None, None, static.block_q, 1),
                        lambda b, h, i, j: (b, h, i, 0))
  k_tile = pl.BlockSpec(
      (None, None, static.block_k, d),
      lambda b, h, i, j: (b, h, jnp.minimum(j, _last_key_tile(i, static)), 0))
  return q_tile, q_rows, k_tile


def _key_specs(static, d, num_q_tiles):
  """Specs for grid (b, h, key tile j, query tile i)."""
  clamp = lambda i, j: jnp.maximum(
      i, _first_query_tile(j, static, num_q_tiles))
  q_tile = pl.BlockSpec((None, None, static.block_q, d),
                        lambda b, h, j, i: (b, h, clamp(i, j), 0))
  q_rows = pl.BlockSpec((None, None, static.block_q, 1),
                        lambda b, h, j, i: (b, h, clamp(i, j), 0))
  k_tile = pl.BlockSpec((None, None, static.block_k, d),
                        lambda b, h, j, i: (b, h, j, 0))
  return q_tile, q_rows, k_tile


def forward(q, k, v, *, static):
  """O [B, H, N, d] in q's dtype and L [B, H, N, 1] float32."""
  batch, heads, n, d = q.shape
  bq = static.block_q
  q_tile, q_rows, k_tile = _query_specs(static, d)
  return pl.pallas_call(
      functools.partial(_forward_kernel, static=static),
      grid=(batch, heads, n // bq, static.padded_kv_len // static.block_k),
      in_specs=[q_tile, k_tile, k_tile],
      out_specs=[q_tile, q_rows],
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype),
                 jax.ShapeDtypeStruct((batch, heads, n, 1), jnp.float32)],
      scratch_shapes=[pltpu.VMEM((bq, d), jnp.float32),
                      pltpu.VMEM((bq, 1), jnp.float32),
                      pltpu.VMEM((bq, 1), jnp.float32)],
      compiler_params=_compiler_params(),
      interpret=_interpret(static),
      name='flash_forward',
  )(q, k, v)


def jvp(q, k, v, o, lse, dq, dk, dv, *, static):
  """(dO [B, H, N, d], dL [B, H, N, 1]); any of dq, dk, dv may be None."""
  batch, heads, n, d = q.shape
  bq = static.block_q
  q_tile, q_rows, k_tile = _query_specs(static, d)
  has = (dq is not None, dk is not None, dv is not None)
  operands = [q, k, v, o, lse]
  specs = [q_tile, k_tile, k_tile, q_tile, q_rows]
  for tangent, spec in ((dq, q_tile), (dk, k_tile), (dv, k_tile)):
    if tangent is not None:
      operands.append(tangent)
      specs.append(spec)
  return pl.pallas_call(
      functools.partial(_jvp_kernel, static=static, has=has),
      grid=(batch, heads, n // bq, static.padded_kv_len // static.block_k),
      in_specs=specs,
      out_specs=[q_tile, q_rows],
      out_shape=[jax.ShapeDtypeStruct(o.shape, o.dtype),
                 jax.ShapeDtypeStruct((batch, heads, n, 1), jnp.float32)],
      scratch_shapes=[pltpu.VMEM((bq, d), jnp.float32),
                      pltpu.VMEM((bq, 1), jnp.float32)],
      compiler_params=_compiler_params(),
      interpret=_interpret(static),
      name='flash_jvp',
  )(*operands)


def backward(q, k, v, lse, go, delta, *, static):
  """(gQ, gK, gV) given gO and delta = rowsum(O∘gO) - gL ([B, H, N, 1])."""
  batch, heads, n, d = q.shape
  m = k.shape[2]
  bq, bk = static.block_q, static.block_k
  q_tile, q_rows, k_tile = _key_specs(static, d, n // bq)
  gk, gv = pl.pallas_call(
      functools.partial(_dkdv_kernel, static=static),
      grid=(batch, heads, m // bk, n // bq),
      in_specs=[q_tile, k_tile, k_tile, q_rows, q_tile, q_rows],
      out_specs=[k_tile, k_tile],
      out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype),
                 jax.ShapeDtypeStruct(v.shape, v.dtype)],
      scratch_shapes=[pltpu.VMEM((bk, d), jnp.float32),
                      pltpu.VMEM((bk, d), jnp.float32)],
      compiler_params=_compiler_params(),
      interpret=_interpret(static),
      name='flash_backward_dkdv',
  )(q, k, v, lse, go, delta)
  q_tile, q_rows, k_tile = _query_specs(static, d)
  gq = pl.pallas_call(
      functools.partial(_dq_kernel, static=static),
      grid=(batch, heads, n // bq, m // bk),
      in_specs=[q_tile, k_tile, k_tile, q_rows, q_tile, q_rows],
      out_specs=q_tile,
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      scratch_shapes=[pltpu.VMEM((bq, d), jnp.float32)],
      compiler_params=_compiler_params(),
      interpret=_interpret(static),
      name='flash_backward_dq',
  )(q, k, v, lse, go, delta)
  return gq, gk, gv

"""Per-block attention math shared by the GPU and TPU kernels.

Both backends tile one (batch, head) pair into query blocks of `block_q` rows
and key blocks of `block_k` rows and run the same arithmetic on each pair of
tiles; only the way tiles reach the kernel differs (an in-kernel loop over keys
on GPU, a reduction grid axis with VMEM scratch on TPU). The functions here
take and return arrays, never refs, so both kernel files call them unchanged.

Row statistics (running max, normaliser, log-sum-exp, `r = rowsum(P∘dS)`) are
column vectors when `keepdims=True` (`[block_q, 1]`, what Mosaic lays out
well) and plain vectors otherwise (`[block_q]`, what Triton lowers well).

Notation: S = s Q K^T, P = softmax(S), L = logsumexp(S),
dS = s (dQ K^T + Q dK^T), dO = P dV + (P∘dS) V - r∘O with r = rowsum(P∘dS).
"""

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

# A large finite negative logit: exp(MASK_VALUE - m) underflows to exactly 0
# while MASK_VALUE - MASK_VALUE stays 0 (an -inf would give NaN there).
MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)

_NT = (((1,), (1,)), ((), ()))  # a @ b^T
_TN = (((0,), (0,)), ((), ()))  # a^T @ b


def dot(a: jax.Array, b: jax.Array) -> jax.Array:
  """a @ b with float32 accumulation."""
  return jnp.dot(a, b, preferred_element_type=jnp.float32)


def dot_nt(a: jax.Array, b: jax.Array) -> jax.Array:
  """a @ b^T with float32 accumulation."""
  return lax.dot_general(a, b, _NT, preferred_element_type=jnp.float32)


def dot_tn(a: jax.Array, b: jax.Array) -> jax.Array:
  """a^T @ b with float32 accumulation."""
  return lax.dot_general(a, b, _TN, preferred_element_type=jnp.float32)


def key_mask(shape, q_start, k_start, *, causal: bool, kv_len: int,
             padded_kv_len: int):
  """Which (query, key) pairs of a tile may attend, or None if all may.

  Args:
    shape: (block_q, block_k).
    q_start, k_start: global index of the tile's first query / key row.
    causal: keys after the query are masked (top-left aligned: key j is
      visible to query i iff j <= i, as in `jax.nn.dot_product_attention`).
    kv_len: the true number of keys; rows past it are padding.
    padded_kv_len: the padded key length the kernel sees.

  Returns:
    Boolean [block_q, block_k] or None.
  """
  if not causal and kv_len == padded_kv_len:
    return None
  k_idx = k_start + lax.broadcasted_iota(jnp.int32, shape, 1)
  mask = None
  if kv_len != padded_kv_len:
    mask = k_idx < kv_len
  if causal:
    q_idx = q_start + lax.broadcasted_iota(jnp.int32, shape, 0)
    visible = q_idx >= k_idx
    mask = visible if mask is None else jnp.logical_and(mask, visible)
  return mask


def scores(q, k, *, sm_scale, mask):
  """S = s q k^T in float32, MASK_VALUE where `mask` is False."""
  s = dot_nt(q, k) * sm_scale
  if mask is not None:
    s = jnp.where(mask, s, MASK_VALUE)
  return s


def column(x: jax.Array, keepdims: bool) -> jax.Array:
  """A row statistic as a [rows, 1] column for broadcasting against tiles."""
  return x if keepdims else x[:, None]


def row_sum(x: jax.Array, keepdims: bool) -> jax.Array:
  return jnp.sum(x, axis=1, keepdims=keepdims)


def online_softmax_step(acc, m, l, s, v, *, keepdims: bool):
  """Folds one key tile into the running (acc, max, normaliser) of a query tile.

  Args:
    acc: [block_q, d] float32, sum_j exp(S_ij - m_i) V_j over the tiles so far.
    m: running row max of S.
    l: running sum_j exp(S_ij - m_i).
    s: [block_q, block_k] float32 scores of this tile.
    v: [block_k, d] values of this tile.
    keepdims: layout of the row statistics (see the module docstring).

  Returns:
    The updated (acc, m, l).
  """
  m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=keepdims))
  correction = jnp.exp(m - m_new)
  p = jnp.exp(s - column(m_new, keepdims))
  l_new = correction * l + row_sum(p, keepdims)
  acc = acc * column(correction, keepdims) + dot(p.astype(v.dtype), v)
  return acc, m_new, l_new


def probabilities(s, lse, keepdims: bool):
  """P = exp(S - L) from the saved log-sum-exp: no online rescaling needed."""
  return jnp.exp(s - column(lse, keepdims))


def tangent_scores(q, k, dq, dk, *, sm_scale):
  """dS = s (dQ K^T + Q dK^T) in float32; dq / dk may be None (zero)."""
  ds = None
  if dq is not None:
    ds = dot_nt(dq, k)
  if dk is not None:
    term = dot_nt(q, dk)
    ds = term if ds is None else ds + term
  return ds * sm_scale


def jvp_step(acc, r, p, ds, v, dv, *, keepdims: bool):
  """Adds one key tile's share of P dV + (P∘dS) V and rowsum(P∘dS)."""
  if ds is not None:
    pds = p * ds
    acc = acc + dot(pds.astype(v.dtype), v)
    r = r + row_sum(pds, keepdims)
  if dv is not None:
    acc = acc + dot(p.astype(dv.dtype), dv)
  return acc, r


def score_cotangent(p, go, v, delta, keepdims: bool):
  """The cotangent of S: P∘(gO V^T - delta), delta = rowsum(O∘gO) - gL."""
  return p * (dot_nt(go, v) - column(delta, keepdims))


@dataclasses.dataclass(frozen=True)
class TileConfig:
  """Static settings of one attention call, shared by all its kernels.

  Attributes:
    sm_scale: the logit scale s.
    causal: mask keys after each query.
    kv_len: true number of keys (rows past it are padding).
    padded_kv_len: keys as the kernels see them, a multiple of block_k.
    block_q, block_k: tile rows along queries / keys.
    interpret: run the kernels in interpret mode (CPU tests).
    num_warps, num_stages: Triton launch settings (GPU only).
  """
  sm_scale: float
  causal: bool
  kv_len: int
  padded_kv_len: int
  block_q: int
  block_k: int
  interpret: bool = False
  num_warps: int = 4
  num_stages: int = 2

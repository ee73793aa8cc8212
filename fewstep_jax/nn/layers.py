"""Layers shared by the MLP, DiT and U-Net.

The conditioning path (times, labels, the optional log-variance head) and the
argument checks that go with it live in `Conditioning`, so all three networks
interpret `t`, `r` and `y` identically.
"""

import math

import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp
import numpy as np

from fewstep_jax.nn import attention as attention_lib


def timestep_embedding(
    t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal embedding [cos(t w_i), sin(t w_i)], w_i = max_period^(-i/half).

  Computed in float32: t is typically scaled to [0, 1000], where bfloat16 cannot
  even represent neighbouring integer times.

  Args:
    t: [B] float.
    dim: embedding width; an odd width gets one zero column.
    max_period: the longest period, i.e. 1 / the lowest frequency.

  Returns:
    [B, dim] float32.
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half) / half)
  angles = t.astype(jnp.float32)[:, None] * freqs[None, :]
  embedding = jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)
  return jnp.pad(embedding, ((0, 0), (0, dim % 2)))


def sincos_2d_position_embedding(
    grid_h: int, grid_w: int, dim: int) -> jax.Array:
  """Fixed 2-D sin-cos position embedding of a grid of patches.

  Half of the channels encode the row, half the column, each with
  `timestep_embedding` frequencies (max period 10000).

  Args:
    grid_h: number of patch rows.
    grid_w: number of patch columns.
    dim: embedding width, divisible by 4.

  Returns:
    [grid_h * grid_w, dim] float32, row-major over the grid.
  """
  if dim % 4:
    raise ValueError(f'2-D sin-cos position embedding needs dim % 4 == 0, '
                     f'got dim={dim}')
  rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing='ij')
  row_embedding = timestep_embedding(jnp.asarray(rows.reshape(-1)), dim // 2)
  col_embedding = timestep_embedding(jnp.asarray(cols.reshape(-1)), dim // 2)
  return jnp.concatenate([row_embedding, col_embedding], axis=-1)


def group_count(channels: int, max_groups: int = 32) -> int:
  """GroupNorm groups for `channels`: about channels / 4, at most 32, a divisor.

  channels / 4 (capped at 32) is the DDPM++ choice; taking the largest divisor
  below it keeps odd widths such as 48 or 96 valid.
  """
  target = max(1, min(max_groups, channels // 4))
  return max(g for g in range(1, target + 1) if channels % g == 0)


class TimeEmbedding(nn.Module):
  """t -> sinusoid(time_scale * t) -> Dense -> SiLU -> Dense.

  Attributes:
    features: output width.
    frequency_dim: width of the sinusoidal features.
    time_scale: multiplies t first; flow time lives in [0, 1], and the
      sinusoid's frequencies are laid out for times up to ~1000.
  """
  features: int
  frequency_dim: int
  time_scale: float
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, t: jax.Array) -> jax.Array:
    """t: [B] float -> [B, features]."""
    h = timestep_embedding(t * self.time_scale, self.frequency_dim)
    h = nn.Dense(self.features, dtype=self.dtype,
                 param_dtype=self.param_dtype)(h)
    h = nn.silu(h)
    return nn.Dense(self.features, dtype=self.dtype,
                    param_dtype=self.param_dtype)(h)


class Conditioning(nn.Module):
  """Turns (t, r, y) into a conditioning vector and an optional log-variance.

  cond = emb_t(t) [+ emb_r(r) if two_times] [+ label_table[y] if num_classes].

  The two times get separate embeddings that are summed: summing keeps the
  conditioning width fixed and, with emb_r's own weights, the network can still
  tell t from r. The label table has num_classes + 1 rows; row num_classes is
  the null label used for classifier-free guidance and whenever y is None.
  Dropping labels for CFG training is the method's job (it passes the null
  label), not the network's.

  The log-variance is a linear function of the time part of the embedding only
  (not the label), zero-initialised so that training starts from uniform
  weighting (sCM's adaptive loss weighting).

  Attributes:
    features: width of the conditioning vector.
    frequency_dim: width of the sinusoidal time features.
    time_scale: see `TimeEmbedding`.
    num_classes: 0 for unconditional networks.
    two_times: whether a second time r is embedded.
    logvar_head: whether to return the log-variance.
  """
  features: int
  frequency_dim: int
  time_scale: float
  num_classes: int
  two_times: bool
  logvar_head: bool
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
      self,
      t: jax.Array,
      r: jax.Array | None,
      y: jax.Array | None,
      batch_size: int,
  ) -> tuple[jax.Array, jax.Array | None]:
    """Embeds the conditioning of one batch.

    Args:
      t: [B] or scalar float.
      r: [B] or scalar float, required iff `two_times`.
      y: [B] int labels, or None (null label); must be None if num_classes == 0.
      batch_size: B (t and r are broadcast to it).

    Returns:
      cond: [B, features] in `dtype`.
      logvar: [B] float32, or None without a log-variance head.
    """
    if self.two_times and r is None:
      raise ValueError('this network has two_times=True: pass r')
    if not self.two_times and r is not None:
      raise ValueError('this network has two_times=False but r was passed; '
                       'set two_times=True to condition on a second time')
    if self.num_classes == 0 and y is not None:
      raise ValueError('this network is unconditional (num_classes=0) but y '
                       'was passed')

    def embed_time(time, name):
      time = jnp.broadcast_to(jnp.asarray(time, jnp.float32), (batch_size,))
      return TimeEmbedding(
          self.features, self.frequency_dim, self.time_scale, dtype=self.dtype,
          param_dtype=self.param_dtype, name=name)(time)

    time_cond = embed_time(t, 'embed_t')
    if self.two_times:
      time_cond = time_cond + embed_time(r, 'embed_r')

    cond = time_cond
    if self.num_classes > 0:
      if y is None:
        y = jnp.full((batch_size,), self.num_classes, jnp.int32)
      label_table = nn.Embed(
          self.num_classes + 1, self.features, dtype=self.dtype,
          param_dtype=self.param_dtype, name='embed_y')
      cond = cond + label_table(y)

    logvar = None
    if self.logvar_head:
      logvar = nn.Dense(
          1, kernel_init=nn.initializers.zeros, param_dtype=self.param_dtype,
          name='logvar')(time_cond.astype(jnp.float32))[:, 0]
    return cond, logvar


class SelfAttention(nn.Module):
  """Multi-head self-attention over a token axis.

  Attributes:
    heads: number of heads; must divide the token width.
    impl: attention implementation, a key of `attention.ATTENTION_IMPLS`.
    zero_init_output: zero the output projection so that a residual
      attention block starts as the identity.
  """
  heads: int
  impl: str = 'xla'
  zero_init_output: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, N, D] -> [B, N, D]."""
    batch, tokens, width = x.shape
    if width % self.heads:
      raise ValueError(
          f'attention width {width} is not divisible by heads={self.heads}')
    qkv = nn.Dense(3 * width, dtype=self.dtype, param_dtype=self.param_dtype,
                   name='qkv')(x)
    qkv = qkv.reshape(batch, tokens, 3, self.heads, width // self.heads)
    out = attention_lib.attention(
        qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], impl=self.impl)
    out = out.reshape(batch, tokens, width)
    output_init = (nn.initializers.zeros if self.zero_init_output
                   else nn.linear.default_kernel_init)
    return nn.Dense(width, kernel_init=output_init, dtype=self.dtype,
                    param_dtype=self.param_dtype, name='out')(out)


class TorchLayerNorm(nn.Module):
  """torch.nn.LayerNorm over the last axis, with its parameter names (weight, bias) and its statistics in float32;
  the output in `dtype`, or the input's where None (CLIP's text encoder, SD's transformer blocks)."""
  eps: float = 1e-5
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    weight = self.param('weight', nn.initializers.ones, (width,))
    bias = self.param('bias', nn.initializers.zeros, (width,))
    h = x.astype(jnp.float32)
    mean = h.mean(-1, keepdims=True)
    variance = jnp.square(h - mean).mean(-1, keepdims=True)
    return ((h - mean) * jax.lax.rsqrt(variance + self.eps) * weight + bias).astype(self.dtype or x.dtype)

"""Compact DDPM++-style U-Net (Song et al., 2021) for 8-32 px images."""

import math
from typing import Sequence

import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp

from fewstep_jax.nn import layers
from fewstep_jax.nn.remat import remat_block

# DDPM++ divides every residual sum by sqrt(2) so activations keep their scale
# however many blocks are stacked.
_SKIP_SCALE = 1 / math.sqrt(2)


class ResBlock(nn.Module):
  """GroupNorm-SiLU-Conv twice, with the conditioning as scale and shift.

  The second conv is zero-initialised, so the block starts as a (rescaled)
  skip connection.
  """
  out_channels: int
  dropout: float
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array, train: bool) -> jax.Array:
    """x: [B, H, W, C_in], cond: [B, E] -> [B, H, W, out_channels]."""
    conv = lambda features, size, **kwargs: nn.Conv(
        features, (size, size), dtype=self.dtype, param_dtype=self.param_dtype,
        **kwargs)
    norm = lambda channels: nn.GroupNorm(
        layers.group_count(channels), epsilon=1e-6, dtype=self.dtype,
        param_dtype=self.param_dtype)

    h = conv(self.out_channels, 3)(nn.silu(norm(x.shape[-1])(x)))
    scale, shift = jnp.split(
        nn.Dense(2 * self.out_channels, dtype=self.dtype,
                 param_dtype=self.param_dtype)(nn.silu(cond)), 2, -1)
    h = norm(self.out_channels)(h)
    h = h * (1 + scale[:, None, None]) + shift[:, None, None]
    h = nn.Dropout(self.dropout)(nn.silu(h), deterministic=not train)
    h = conv(self.out_channels, 3, kernel_init=nn.initializers.zeros)(h)
    skip = x if x.shape[-1] == self.out_channels else conv(
        self.out_channels, 1)(x)
    return (skip + h) * _SKIP_SCALE


class AttentionBlock(nn.Module):
  """Single-head self-attention over pixels (DDPM++); starts as identity."""
  attention: str
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, H, W, C] -> [B, H, W, C]."""
    batch, height, width, channels = x.shape
    h = nn.GroupNorm(layers.group_count(channels), epsilon=1e-6,
                     dtype=self.dtype, param_dtype=self.param_dtype)(x)
    h = layers.SelfAttention(
        heads=1, impl=self.attention, zero_init_output=True, dtype=self.dtype,
        param_dtype=self.param_dtype)(h.reshape(batch, -1, channels))
    return (x + h.reshape(x.shape)) * _SKIP_SCALE


class UNet(nn.Module):
  """U-Net with one resolution level per entry of `channel_mult`.

  Down path: per level, num_res_blocks ResBlocks (each followed by attention
  where the feature map's height is in attn_resolutions), then a stride-2 conv
  (except at the last level). Middle: ResBlock, attention, ResBlock (the
  attention as in DDPM++; middle_attention=False drops it). Up path: per level, num_res_blocks + 1
  ResBlocks, each taking one stored skip activation, then nearest-neighbour
  upsampling and a conv. The output conv is zero-initialised, so a fresh
  network outputs exactly 0.

  Attributes:
    channels: base width; level i has channels * channel_mult[i].
    channel_mult: width multipliers, one per level; H and W must be divisible
      by 2 ** (len(channel_mult) - 1).
    num_res_blocks: ResBlocks per level on the way down.
    attn_resolutions: feature-map heights (pixels) at which attention runs.
    middle_attention: attention between the two middle ResBlocks (independent
      of attn_resolutions; False: a network without any attention when
      attn_resolutions=() as well, whose cost is linear in the pixels).
    dropout: dropout rate inside the ResBlocks (active when train=True).
    time_embed_dim: width of the sinusoidal time features. The conditioning
      vector is 4 * channels wide, as in DDPM++.
    num_classes: number of labels (0: unconditional); the table has one more
      row, the null label.
    two_times: condition on a second time r.
    time_scale: multiplies t (and r) before the sinusoidal embedding.
    attention: attention implementation, see `attention.ATTENTION_IMPLS`.
    logvar_head: also return a per-sample log-variance [B].
    remat: what the backward pass keeps of each ResBlock and AttentionBlock ('none', 'full', 'dots'; see
      fewstep_jax.nn.remat).
    dtype: compute dtype of activations.
    param_dtype: dtype of the parameters.
  """
  channels: int = 32
  channel_mult: Sequence[int] = (1, 2)
  num_res_blocks: int = 1
  attn_resolutions: Sequence[int] = (4,)
  middle_attention: bool = True
  dropout: float = 0.0
  time_embed_dim: int = 64
  num_classes: int = 0
  two_times: bool = False
  time_scale: float = 1000.0
  attention: str = 'xla'
  logvar_head: bool = False
  remat: str = 'none'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
      self,
      x: jax.Array,
      t: jax.Array,
      r: jax.Array | None = None,
      y: jax.Array | None = None,
      *,
      train: bool = False,
  ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Applies the network.

    Args:
      x: [B, H, W, C] images.
      t: [B] float time (or a scalar, broadcast over the batch).
      r: [B] float second time; required iff two_times.
      y: [B] int32 labels, or None for the null label.
      train: enables dropout (rng stream 'dropout').

    Returns:
      [B, H, W, C] float32; with logvar_head, also logvar [B] float32.
    """
    if x.ndim != 4:
      raise ValueError(f'UNet expects images [B, H, W, C], got shape {x.shape}')
    batch, height, width, channels = x.shape
    levels = len(self.channel_mult)
    factor = 2 ** (levels - 1)
    if height % factor or width % factor:
      raise ValueError(
          f'UNet with {levels} levels needs H and W divisible by {factor}; '
          f'got H={height}, W={width}')

    cond, logvar = layers.Conditioning(
        features=4 * self.channels,
        frequency_dim=self.time_embed_dim,
        time_scale=self.time_scale, num_classes=self.num_classes,
        two_times=self.two_times, logvar_head=self.logvar_head,
        dtype=self.dtype, param_dtype=self.param_dtype, name='cond')(
            t, r, y, batch)

    conv = lambda features, **kwargs: nn.Conv(
        features, (3, 3), dtype=self.dtype, param_dtype=self.param_dtype,
        **kwargs)
    res_block = lambda features: remat_block(ResBlock, self.remat, (3,))(
        features, self.dropout, dtype=self.dtype, param_dtype=self.param_dtype)
    attention_block = lambda: remat_block(AttentionBlock, self.remat)(
        self.attention, dtype=self.dtype, param_dtype=self.param_dtype)

    h = conv(self.channels)(x.astype(self.dtype))
    skips = [h]
    for level, mult in enumerate(self.channel_mult):
      for _ in range(self.num_res_blocks):
        h = res_block(self.channels * mult)(h, cond, train)
        if h.shape[1] in self.attn_resolutions:
          h = attention_block()(h)
        skips.append(h)
      if level != levels - 1:
        h = conv(h.shape[-1], strides=(2, 2))(h)
        skips.append(h)

    h = res_block(h.shape[-1])(h, cond, train)
    if self.middle_attention:
      h = attention_block()(h)
    h = res_block(h.shape[-1])(h, cond, train)
    # The GAN head of score distillation reads these (nn.make_features); a no-op in a plain apply.
    self.sow('intermediates', 'bottleneck', h)

    for level, mult in reversed(list(enumerate(self.channel_mult))):
      for _ in range(self.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = res_block(self.channels * mult)(h, cond, train)
        if h.shape[1] in self.attn_resolutions:
          h = attention_block()(h)
      if level != 0:
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
        h = conv(h.shape[-1])(h)

    h = nn.GroupNorm(layers.group_count(h.shape[-1]), epsilon=1e-6,
                     dtype=self.dtype, param_dtype=self.param_dtype)(h)
    out = conv(channels, kernel_init=nn.initializers.zeros)(nn.silu(h))
    out = out.astype(jnp.float32)
    return out if logvar is None else (out, logvar)

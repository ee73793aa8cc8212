"""Diffusion Transformer (Peebles & Xie, 2023) with adaLN-Zero conditioning."""

import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp

from fewstep_jax.nn import layers
from fewstep_jax.nn.remat import remat_block


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
  """x * (1 + scale) + shift; x: [B, N, D], shift and scale: [B, 1, D]."""
  return x * (1 + scale) + shift


def patchify(x: jax.Array, patch_size: int) -> jax.Array:
  """[B, H, W, C] -> [B, (H/p) * (W/p), p * p * C], patches row-major."""
  batch, height, width, channels = x.shape
  p = patch_size
  x = x.reshape(batch, height // p, p, width // p, p, channels)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(batch, (height // p) * (width // p), p * p * channels)


def unpatchify(
    tokens: jax.Array, height: int, width: int, patch_size: int) -> jax.Array:
  """Inverse of `patchify`: [B, N, p * p * C] -> [B, H, W, C]."""
  batch = tokens.shape[0]
  p = patch_size
  channels = tokens.shape[-1] // (p * p)
  x = tokens.reshape(batch, height // p, width // p, p, p, channels)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(batch, height, width, channels)


def _layer_norm(dtype: Dtype) -> nn.LayerNorm:
  # No affine parameters: adaLN supplies the per-sample scale and shift.
  return nn.LayerNorm(epsilon=1e-6, use_bias=False, use_scale=False,
                      dtype=dtype)


class DiTBlock(nn.Module):
  """Attention + MLP, each modulated and gated by the conditioning (adaLN-Zero).

  The modulation Dense is zero-initialised, so both gates start at 0 and the
  block starts as the identity.
  """
  hidden: int
  heads: int
  mlp_ratio: float
  dropout: float
  attention: str
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array, train: bool) -> jax.Array:
    """x: [B, N, hidden], cond: [B, hidden] -> [B, N, hidden]."""
    dense = lambda features, **kwargs: nn.Dense(
        features, dtype=self.dtype, param_dtype=self.param_dtype, **kwargs)
    modulation = dense(6 * self.hidden, kernel_init=nn.initializers.zeros,
                       name='adaln')(nn.silu(cond))
    (shift_attn, scale_attn, gate_attn,
     shift_mlp, scale_mlp, gate_mlp) = jnp.split(modulation[:, None], 6, -1)

    h = modulate(_layer_norm(self.dtype)(x), shift_attn, scale_attn)
    h = layers.SelfAttention(
        self.heads, impl=self.attention, dtype=self.dtype,
        param_dtype=self.param_dtype, name='attn')(h)
    x = x + gate_attn * h

    h = modulate(_layer_norm(self.dtype)(x), shift_mlp, scale_mlp)
    h = nn.gelu(dense(int(self.hidden * self.mlp_ratio), name='mlp_in')(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = dense(self.hidden, name='mlp_out')(h)
    return x + gate_mlp * h


class DiT(nn.Module):
  """Patch transformer over NHWC images with adaLN-Zero conditioning.

  Positions use a fixed 2-D sin-cos embedding, so one set of weights runs at
  any resolution divisible by the patch size. The blocks' modulation and the
  final projection are zero-initialised: a fresh network outputs exactly 0.

  Attributes:
    patch_size: side of the square patches; must divide H and W.
    hidden: token width (divisible by 4 for the position embedding and by
      heads).
    depth: number of transformer blocks.
    heads: attention heads.
    mlp_ratio: MLP width / hidden.
    time_embed_dim: width of the sinusoidal time features (256 in DiT).
    num_classes: number of labels (0: unconditional); the table has one more
      row, the null label.
    two_times: condition on a second time r.
    dropout: dropout rate in the MLPs (active when train=True).
    logvar_head: also return a per-sample log-variance [B].
    attention: attention implementation, see `attention.ATTENTION_IMPLS`.
    time_scale: multiplies t (and r) before the sinusoidal embedding.
    remat: what the backward pass keeps of each DiTBlock ('none', 'full', 'dots'; see fewstep_jax.nn.remat).
    dtype: compute dtype of activations.
    param_dtype: dtype of the parameters.
  """
  patch_size: int = 2
  hidden: int = 64
  depth: int = 2
  heads: int = 4
  mlp_ratio: float = 4.0
  time_embed_dim: int = 256
  num_classes: int = 0
  two_times: bool = False
  dropout: float = 0.0
  logvar_head: bool = False
  attention: str = 'xla'
  time_scale: float = 1000.0
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
      raise ValueError(f'DiT expects images [B, H, W, C], got shape {x.shape}')
    batch, height, width, channels = x.shape
    p = self.patch_size
    if height % p or width % p:
      raise ValueError(f'DiT patch_size={p} must divide the image size; got '
                       f'H={height}, W={width}')

    cond, logvar = layers.Conditioning(
        features=self.hidden, frequency_dim=self.time_embed_dim,
        time_scale=self.time_scale, num_classes=self.num_classes,
        two_times=self.two_times, logvar_head=self.logvar_head,
        dtype=self.dtype, param_dtype=self.param_dtype, name='cond')(
            t, r, y, batch)

    dense = lambda features, **kwargs: nn.Dense(
        features, dtype=self.dtype, param_dtype=self.param_dtype, **kwargs)
    tokens = dense(self.hidden, name='patch_embed')(
        patchify(x.astype(self.dtype), p))
    tokens = tokens + layers.sincos_2d_position_embedding(
        height // p, width // p, self.hidden).astype(self.dtype)
    block = remat_block(DiTBlock, self.remat, (3,))
    for _ in range(self.depth):
      tokens = block(
          self.hidden, self.heads, self.mlp_ratio, self.dropout,
          self.attention, dtype=self.dtype, param_dtype=self.param_dtype)(
              tokens, cond, train)

    # The final tokens serve as bottleneck features for a GAN head (nn.make_features).
    self.sow('intermediates', 'bottleneck', tokens)
    shift, scale = jnp.split(
        dense(2 * self.hidden, kernel_init=nn.initializers.zeros,
              name='final_adaln')(nn.silu(cond))[:, None], 2, -1)
    tokens = modulate(_layer_norm(self.dtype)(tokens), shift, scale)
    tokens = dense(p * p * channels, kernel_init=nn.initializers.zeros,
                   name='final')(tokens)
    out = unpatchify(tokens, height, width, p).astype(jnp.float32)
    return out if logvar is None else (out, logvar)

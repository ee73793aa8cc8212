"""SiT / DiT (Ma et al. 2024; Peebles and Xie 2023) in flax, with the published checkpoints' parameter layout.

Followed line by line: `models.py` of the SiT repository (`TimestepEmbedder`, `LabelEmbedder`, `SiTBlock`,
`FinalLayer`, `SiT`, `get_2d_sincos_pos_embed`, and the XL/L/B/S x 2/4/8 sizes), which is DiT's `models.py` with the
variance channels dropped from the output; its attention and MLP are timm's `Attention` (qkv bias) and `Mlp` (tanh
GELU). Parameters keep PyTorch's names and layouts: `blocks.3.attn.qkv.weight` is the flax path
`('blocks_3', 'attn', 'qkv', 'weight')`, `t_embedder.mlp.0.bias` is `('t_embedder', 'mlp_0', 'bias')`
(`torch_name`). Activations are NHWC.

A raw network: `module.apply(params, x, t_sit, None, y)` with SiT's own time t_sit (t_sit = 1 data, 0 noise) returns
SiT's output, the velocity d x_t / d t_sit = data - noise. The `sit` readout (`paths.READOUTS`) reads it as the
project's flow velocity: t = 1 - t_sit and v = -output. Labels index the embedding table; the null label (y = None
or y = num_classes) is its last row, SiT's classifier-free-guidance embedding, which exists when
class_dropout_prob > 0 (as in every published checkpoint).

Deviations: the fixed sin-cos position table (a frozen parameter in SiT) is a parameter behind a stop-gradient.
`learn_sigma` keeps the output width (2C, the variance half unused) so that the checkpoints import. DiT's
checkpoints (DiT's `models.py`, the same module layout) are read through the `dit` readout instead: an epsilon
prediction at DDPM's linear-schedule timesteps (`paths.dit_eps`).
"""
import math
import re
from typing import Sequence

import flax.linen as nn
from flax.typing import Dtype
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from fewstep_jax.nn import attention as attention_lib
from fewstep_jax.nn import edm_unets
from fewstep_jax.nn.remat import remat_block

# name -> (depth, hidden_size, patch_size, num_heads), SiT's SiT_models.
SIZES = {f'{size}/{patch}': (depth, hidden, patch, heads)
         for size, (depth, hidden, heads) in {'XL': (28, 1152, 16), 'L': (24, 1024, 16), 'B': (12, 768, 12),
                                              'S': (12, 384, 6)}.items()
         for patch in (2, 4, 8)}


def sincos_pos_embed(embed_dim: int, grid_size: int) -> np.ndarray:
  """SiT's (MAE's) 2-D sin-cos table [grid_size^2, embed_dim]: half the channels encode one grid coordinate, half the
  other, each as [sin, cos] of the coordinate times 1 / 10000^(2i / d)."""
  def one_axis(dim, positions):
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.outer(positions.reshape(-1), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
  # As SiT's meshgrid(grid_w, grid_h): the first half follows the column index, the second the row index.
  rows, cols = np.meshgrid(np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32),
                           indexing='ij')
  return np.concatenate([one_axis(embed_dim // 2, cols), one_axis(embed_dim // 2, rows)], axis=1).astype(np.float32)


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
  """SiT's (GLIDE's) sinusoidal embedding [B] -> [B, dim] as [cos, sin]."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None]
  embedding = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    embedding = jnp.concatenate([embedding, jnp.zeros_like(embedding[:, :1])], axis=-1)
  return embedding


def torch_name(path: Sequence[str]) -> str:
  """The PyTorch state-dict key of a flax path of SiT: 'blocks_3' is ModuleList entry blocks.3, 'mlp_0' the
  Sequential entry mlp.0."""
  return '.'.join(re.sub(r'_(\d+)$', r'.\1', part) for part in path)


class _TorchLinear(nn.Module):
  features: int
  kernel_init: object
  bias_init: object
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    # The initialiser sees the [in, out] shape (xavier is symmetric in fan-in and fan-out); stored [out, in].
    weight = self.param('weight', lambda key, shape: self.kernel_init(key, shape[::-1]).T,
                        (self.features, x.shape[-1]))
    bias = self.param('bias', self.bias_init, (self.features,))
    return x.astype(self.dtype) @ weight.astype(self.dtype).T + bias.astype(self.dtype)


def _layer_norm(x, eps=1e-6):
  """LayerNorm without affine parameters, statistics in float32."""
  h = x.astype(jnp.float32)
  mean = h.mean(-1, keepdims=True)
  var = jnp.square(h - mean).mean(-1, keepdims=True)
  return ((h - mean) * lax.rsqrt(var + eps)).astype(x.dtype)


def _modulate(x, shift, scale):
  return x * (1 + scale[:, None]) + shift[:, None]


class SiTBlock(nn.Module):
  hidden_size: int
  num_heads: int
  mlp_ratio: float = 4.0
  attention_impl: str = 'xla'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, c):
    d, heads = self.hidden_size, self.num_heads
    zeros = nn.initializers.zeros
    modulation = _TorchLinear(6 * d, zeros, zeros, self.dtype, name='adaLN_modulation_1')(nn.silu(c))
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(modulation, 6, axis=-1)

    h = _modulate(_layer_norm(x), shift_msa, scale_msa)
    attn = _Attention(d, heads, self.attention_impl, self.dtype, name='attn')(h)
    x = x + gate_msa[:, None] * attn
    h = _modulate(_layer_norm(x), shift_mlp, scale_mlp)
    mlp = _Mlp(int(d * self.mlp_ratio), d, self.dtype, name='mlp')(h)
    return x + gate_mlp[:, None] * mlp


class _Attention(nn.Module):
  """timm's Attention with qkv bias: qkv channels split as [(q, k, v), heads, head_dim]."""
  dim: int
  num_heads: int
  attention_impl: str
  dtype: Dtype

  @nn.compact
  def __call__(self, x):
    batch, tokens, _ = x.shape
    init = nn.initializers.xavier_uniform()
    qkv = _TorchLinear(3 * self.dim, init, nn.initializers.zeros, self.dtype, name='qkv')(x)
    qkv = qkv.reshape(batch, tokens, 3, self.num_heads, self.dim // self.num_heads)
    out = attention_lib.attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], impl=self.attention_impl)
    return _TorchLinear(self.dim, init, nn.initializers.zeros, self.dtype, name='proj')(
        out.reshape(batch, tokens, self.dim))


class _Mlp(nn.Module):
  """timm's Mlp with the tanh GELU."""
  hidden: int
  out: int
  dtype: Dtype

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.xavier_uniform()
    h = _TorchLinear(self.hidden, init, nn.initializers.zeros, self.dtype, name='fc1')(x)
    h = nn.gelu(h, approximate=True)
    return _TorchLinear(self.out, init, nn.initializers.zeros, self.dtype, name='fc2')(h)


class _PatchEmbed(nn.Module):
  """timm's PatchEmbed: its `proj`, a p x p convolution of stride p."""
  hidden: int
  patch: int
  dtype: Dtype

  @nn.compact
  def __call__(self, x):
    return _PatchConv(self.hidden, self.patch, self.dtype, name='proj')(x)


class _PatchConv(nn.Module):
  """weight [D, C, p, p] (xavier-initialised as a linear layer, as SiT does), bias [D]."""
  hidden: int
  patch: int
  dtype: Dtype

  @nn.compact
  def __call__(self, x):
    channels, patch = x.shape[-1], self.patch
    limit = math.sqrt(6 / (channels * patch * patch + self.hidden))
    w = self.param('weight', lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -limit, limit),
                   (self.hidden, channels, patch, patch))
    b = self.param('bias', nn.initializers.zeros, (self.hidden,))
    return lax.conv_general_dilated(x.astype(self.dtype), w.astype(self.dtype), (patch, patch), 'VALID',
                                    dimension_numbers=('NHWC', 'OIHW', 'NHWC')) + b.astype(self.dtype)


class _TimestepEmbedder(nn.Module):
  hidden: int
  frequency_dim: int = 256

  @nn.compact
  def __call__(self, t):
    normal = nn.initializers.normal(0.02)
    h = _TorchLinear(self.hidden, normal, nn.initializers.zeros, name='mlp_0')(
        timestep_embedding(t, self.frequency_dim))
    return _TorchLinear(self.hidden, normal, nn.initializers.zeros, name='mlp_2')(nn.silu(h))


class _LabelEmbedder(nn.Module):
  rows: int
  hidden: int

  @nn.compact
  def __call__(self, labels):
    return _Table(self.rows, self.hidden, name='embedding_table')(labels)


class _Table(nn.Module):
  rows: int
  hidden: int

  @nn.compact
  def __call__(self, labels):
    weight = self.param('weight', nn.initializers.normal(0.02), (self.rows, self.hidden))
    return weight[labels]


class _FinalLayer(nn.Module):
  out: int
  dtype: Dtype

  @nn.compact
  def __call__(self, x, c):
    zeros = nn.initializers.zeros
    shift, scale = jnp.split(_TorchLinear(2 * x.shape[-1], zeros, zeros, self.dtype, name='adaLN_modulation_1')(
        nn.silu(c)), 2, axis=-1)
    return _TorchLinear(self.out, zeros, zeros, self.dtype, name='linear')(_modulate(_layer_norm(x), shift, scale))


class SiT(nn.Module):
  """SiT (DiT's architecture). Defaults are SiT-XL/2's; `SIZES` lists the published sizes.

  Attributes: depth, hidden_size, patch_size, num_heads, mlp_ratio, class_dropout_prob (label dropout while
  training; > 0 creates the null-label row), train_label_dropout (False: never drop labels, for a method that drops
  them itself or trains without dropping them; the null row stays), learn_sigma (the checkpoint's output width is
  2C), attention (the attention kernel, `attention.ATTENTION_IMPLS`), remat (what the backward pass keeps of each
  SiTBlock, fewstep_jax.nn.remat).
  """
  depth: int = 28
  hidden_size: int = 1152
  patch_size: int = 2
  num_heads: int = 16
  mlp_ratio: float = 4.0
  class_dropout_prob: float = 0.1
  train_label_dropout: bool = True
  learn_sigma: bool = True
  attention: str = 'xla'
  remat: str = 'none'
  num_classes: int = 0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  two_times = False
  parameter_free_fields = ('train_label_dropout',)  # runs.network_differences.

  @nn.compact
  def __call__(self, x, t, r=None, y=None, *, train: bool = False):
    """x: [B, H, W, C], t: [B] SiT time (1 data, 0 noise), y: [B] labels or None -> [B, H, W, C] float32."""
    edm_unets._check_inputs('SiT', x, r, self.patch_size)
    batch, height, width, channels = x.shape
    p, d = self.patch_size, self.hidden_size
    grid = height // p
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (batch,))
    dtype = self.dtype

    h = _PatchEmbed(d, p, dtype, name='x_embedder')(x).reshape(batch, grid * grid, d)
    pos_embed = self.param('pos_embed', lambda key, shape: jnp.asarray(sincos_pos_embed(d, grid))[None],
                           (1, grid * grid, d))
    h = h + lax.stop_gradient(pos_embed).astype(dtype)
    labels = jnp.full((batch,), self.num_classes, jnp.int32) if y is None else jnp.broadcast_to(y, (batch,))
    if train and self.train_label_dropout and self.class_dropout_prob > 0:
      drop = jax.random.uniform(self.make_rng('dropout'), (batch,)) < self.class_dropout_prob
      labels = jnp.where(drop, self.num_classes, labels)
    rows = self.num_classes + (1 if self.class_dropout_prob > 0 else 0)
    c = _TimestepEmbedder(d, name='t_embedder')(t) + _LabelEmbedder(rows, d, name='y_embedder')(labels)
    c = c.astype(dtype)

    block = remat_block(SiTBlock, self.remat)
    for i in range(self.depth):
      h = block(d, self.num_heads, self.mlp_ratio, self.attention, dtype, name=f'blocks_{i}')(h, c)
    self.sow('intermediates', 'bottleneck', h)

    out_channels = 2 * channels if self.learn_sigma else channels
    h = _FinalLayer(p * p * out_channels, dtype, name='final_layer')(h, c)
    h = h.reshape(batch, grid, grid, p, p, out_channels).transpose(0, 1, 3, 2, 4, 5)
    h = h.reshape(batch, grid * p, grid * p, out_channels)
    return h[..., :channels].astype(jnp.float32)

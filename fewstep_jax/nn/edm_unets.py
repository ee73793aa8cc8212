"""EDM's U-Nets (Karras et al., 2022) in flax, with the published checkpoints' exact module layout.

`SongUNet` is EDM's reimplementation of DDPM++ and NCSN++ (its CIFAR-10 networks), `DhariwalUNet` of ADM (its
ImageNet-64 network). Followed line by line: `training/networks.py` of the EDM repository (classes `Linear`, `Conv2d`,
`GroupNorm`, `UNetBlock`, `PositionalEmbedding`, `FourierEmbedding`, `SongUNet`, `DhariwalUNet`).

Parameters keep PyTorch's names and layouts (`weight` [out, in, kh, kw] and [out, in], `bias`), so that a checkpoint
imports by renaming alone: the torch key `enc.16x16_block0.conv0.weight` is the flax path
`('enc_16x16_block0', 'conv0', 'weight')` (see `torch_name`). Activations are NHWC, the project's image layout; the
convolutions read the OIHW kernels directly.

These are raw networks: called as `module.apply(params, x, c_noise, None, y)` with the EDM network input c_in x and
c_noise = ln(sigma) / 4, they return EDMPrecond's F_x. The project's `edm` readout (`paths.edm_denoiser`) adds the
preconditioning, exactly EDMPrecond's. Labels are one-hot vectors as in EDM; the null label (y = None, or
y = num_classes) is the zero vector, which is what EDMPrecond feeds an unconditional call.

Deviations:
  - The augmentation labels of EDM's non-leaking augmentation are never passed (EDM's sampler passes none either):
    `augment_dim` only creates `map_augment`, so that checkpoints trained with augmentation import.
  - NCSN++'s random Fourier frequencies (a buffer in EDM) are a parameter here, behind a stop-gradient: an optimiser
    without weight decay leaves them where they started, as EDM does.
  - The up/down-sampling filters (EDM's `resample_filter` buffers) are constants; the importer checks that a
    checkpoint's match them.
"""
import math
from typing import Sequence

import flax.linen as nn
from flax.typing import Dtype
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from fewstep_jax.nn import attention as attention_lib
from fewstep_jax.nn.remat import remat_block


def weight_init(mode: str, fan_in: int, fan_out: int, scale: float = 1.0):
  """EDM's `weight_init` as a flax initialiser, times `scale` (its init_weight / init_bias)."""

  def init(key, shape, dtype=jnp.float32):
    if mode == 'xavier_uniform':
      return scale * math.sqrt(6 / (fan_in + fan_out)) * jax.random.uniform(key, shape, dtype, -1, 1)
    if mode == 'xavier_normal':
      return scale * math.sqrt(2 / (fan_in + fan_out)) * jax.random.normal(key, shape, dtype)
    if mode == 'kaiming_uniform':
      return scale * math.sqrt(3 / fan_in) * jax.random.uniform(key, shape, dtype, -1, 1)
    if mode == 'kaiming_normal':
      return scale * math.sqrt(1 / fan_in) * jax.random.normal(key, shape, dtype)
    raise ValueError(f'unknown init mode {mode!r}')

  return init


def resample_filter(taps: Sequence[float]) -> np.ndarray:
  """EDM's 2-D resampling filter: the outer product of `taps` with itself, normalised to sum 1. [k, k] float32."""
  taps = np.asarray(taps, np.float32)
  return np.outer(taps, taps) / taps.sum() ** 2


def _depthwise(x, kernel_2d, *, stride: int, padding: int, transpose: bool):
  """Applies the same [k, k] filter to every channel of x [B, H, W, C]; `transpose` is conv_transpose2d's
  stride-2 upsampling (the filter is symmetric, so no flip is needed)."""
  channels = x.shape[-1]
  kernel = jnp.tile(jnp.asarray(kernel_2d, x.dtype)[:, :, None, None], (1, 1, 1, channels))
  k = kernel_2d.shape[0]
  if transpose:
    pad = k - 1 - padding
    return lax.conv_general_dilated(x, kernel, (1, 1), [(pad, pad)] * 2, lhs_dilation=(stride, stride),
                                    dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=channels)
  return lax.conv_general_dilated(x, kernel, (stride, stride), [(padding, padding)] * 2,
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=channels)


def _conv(x, weight, padding: int):
  return lax.conv_general_dilated(x, weight.astype(x.dtype), (1, 1), [(padding, padding)] * 2,
                                  dimension_numbers=('NHWC', 'OIHW', 'NHWC'))


class Linear(nn.Module):
  """EDM's `Linear`: weight [out, in], optional bias [out]."""
  features: int
  use_bias: bool = True
  init_mode: str = 'kaiming_normal'
  init_weight: float = 1.0
  init_bias: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    init = lambda scale: weight_init(self.init_mode, fan_in, self.features, scale)
    weight = self.param('weight', init(self.init_weight), (self.features, fan_in))
    x = x.astype(self.dtype) @ weight.astype(self.dtype).T
    if self.use_bias:
      x = x + self.param('bias', init(self.init_bias), (self.features,)).astype(self.dtype)
    return x


class Conv2d(nn.Module):
  """EDM's `Conv2d` with optional 2x up/down-sampling by `filter_taps`; kernel 0 resamples without weights."""
  out_channels: int
  kernel: int
  use_bias: bool = True
  up: bool = False
  down: bool = False
  filter_taps: Sequence[float] = (1, 1)
  fused_resample: bool = False
  init_mode: str = 'kaiming_normal'
  init_weight: float = 1.0
  init_bias: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    in_channels = x.shape[-1]
    k = self.kernel
    init = lambda scale: weight_init(self.init_mode, in_channels * k * k, self.out_channels * k * k, scale)
    w = self.param('weight', init(self.init_weight), (self.out_channels, in_channels, k, k)) if k else None
    b = self.param('bias', init(self.init_bias), (self.out_channels,)) if k and self.use_bias else None
    f = resample_filter(self.filter_taps) if self.up or self.down else None
    w_pad = k // 2
    f_pad = (f.shape[-1] - 1) // 2 if f is not None else 0
    x = x.astype(self.dtype)
    if self.fused_resample and self.up and w is not None:
      x = _depthwise(x, f * 4, stride=2, padding=max(f_pad - w_pad, 0), transpose=True)
      x = _conv(x, w, max(w_pad - f_pad, 0))
    elif self.fused_resample and self.down and w is not None:
      x = _conv(x, w, w_pad + f_pad)
      x = _depthwise(x, f, stride=2, padding=0, transpose=False)
    else:
      if self.up:
        x = _depthwise(x, f * 4, stride=2, padding=f_pad, transpose=True)
      if self.down:
        x = _depthwise(x, f, stride=2, padding=f_pad, transpose=False)
      if w is not None:
        x = _conv(x, w, w_pad)
    if b is not None:
      x = x + b.astype(self.dtype)
    return x


class GroupNorm(nn.Module):
  """EDM's `GroupNorm`: min(num_groups, C // min_channels_per_group) groups of contiguous channels, statistics in
  float32."""
  num_groups: int = 32
  min_channels_per_group: int = 4
  eps: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    groups = min(self.num_groups, channels // self.min_channels_per_group)
    weight = self.param('weight', nn.initializers.ones, (channels,))
    bias = self.param('bias', nn.initializers.zeros, (channels,))
    h = x.astype(jnp.float32).reshape(x.shape[:-1] + (groups, channels // groups))
    mean = h.mean(axis=(1, 2, 4), keepdims=True)
    var = jnp.square(h - mean).mean(axis=(1, 2, 4), keepdims=True)
    h = ((h - mean) * lax.rsqrt(var + self.eps)).reshape(x.shape)
    return (h * weight + bias).astype(self.dtype)


class UNetBlock(nn.Module):
  """EDM's `UNetBlock`: the union of the DDPM++, NCSN++ and ADM residual blocks, with optional attention."""
  out_channels: int
  up: bool = False
  down: bool = False
  attention: bool = False
  num_heads: int | None = None
  channels_per_head: int = 64
  dropout: float = 0.0
  skip_scale: float = 1.0
  eps: float = 1e-5
  filter_taps: Sequence[float] = (1, 1)
  resample_proj: bool = False
  adaptive_scale: bool = True
  init: tuple = ()
  init_zero: tuple = (('init_weight', 0.0),)
  init_attn: tuple | None = None
  attention_impl: str = 'xla'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, emb, train: bool):
    in_channels, out = x.shape[-1], self.out_channels
    heads = 0 if not self.attention else self.num_heads or out // self.channels_per_head
    init, init_zero = dict(self.init), dict(self.init_zero)
    init_attn = init if self.init_attn is None else dict(self.init_attn)
    norm = lambda name: GroupNorm(eps=self.eps, dtype=self.dtype, name=name)
    orig = x
    x = Conv2d(out, 3, up=self.up, down=self.down, filter_taps=self.filter_taps, dtype=self.dtype, name='conv0',
               **init)(nn.silu(norm('norm0')(x)))
    params = Linear(out * (2 if self.adaptive_scale else 1), dtype=self.dtype, name='affine', **init)(emb)
    params = params[:, None, None, :]
    if self.adaptive_scale:
      scale, shift = jnp.split(params, 2, axis=-1)
      x = nn.silu(shift + norm('norm1')(x) * (scale + 1))
    else:
      x = nn.silu(norm('norm1')(x + params))
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    x = Conv2d(out, 3, dtype=self.dtype, name='conv1', **init_zero)(x)
    if out != in_channels or self.up or self.down:
      kernel = 1 if self.resample_proj or out != in_channels else 0
      orig = Conv2d(out, kernel, up=self.up, down=self.down, filter_taps=self.filter_taps, dtype=self.dtype,
                    name='skip', **init)(orig)
    x = (x + orig) * self.skip_scale

    if heads:
      qkv = Conv2d(out * 3, 1, dtype=self.dtype, name='qkv', **init_attn)(norm('norm2')(x))
      # EDM splits the 3C channels as [heads, C / heads, (q, k, v)].
      batch, height, width, _ = x.shape
      qkv = qkv.reshape(batch, height * width, heads, out // heads, 3)
      a = attention_lib.attention(qkv[..., 0], qkv[..., 1], qkv[..., 2], impl=self.attention_impl)
      a = a.reshape(x.shape)
      x = (Conv2d(out, 1, dtype=self.dtype, name='proj', **init_zero)(a) + x) * self.skip_scale
    return x


def positional_embedding(x, num_channels: int, max_positions: int = 10000, endpoint: bool = False):
  """EDM's `PositionalEmbedding`: [B] -> [B, num_channels] as [cos, sin]."""
  freqs = jnp.arange(num_channels // 2, dtype=jnp.float32) / (num_channels // 2 - (1 if endpoint else 0))
  freqs = (1 / max_positions) ** freqs
  x = jnp.outer(x.astype(jnp.float32), freqs)
  return jnp.concatenate([jnp.cos(x), jnp.sin(x)], axis=1)


class FourierEmbedding(nn.Module):
  """EDM's `FourierEmbedding` (NCSN++): random frequencies N(0, scale^2), [B] -> [B, num_channels] as [cos, sin].
  The frequencies are EDM's buffer `freqs`; here a parameter that receives no gradient."""
  num_channels: int
  scale: float = 16.0

  @nn.compact
  def __call__(self, x):
    freqs = self.param('freqs', lambda key, shape: self.scale * jax.random.normal(key, shape),
                       (self.num_channels // 2,))
    x = jnp.outer(x.astype(jnp.float32), 2 * np.pi * lax.stop_gradient(freqs))
    return jnp.concatenate([jnp.cos(x), jnp.sin(x)], axis=1)


def _labels(module, y, batch: int, num_classes: int, label_dropout: float, train: bool):
  """One-hot labels [B, num_classes]; None or the null label num_classes is the zero vector; EDM's label dropout
  zeroes whole rows while training."""
  if y is None:
    one_hot = jnp.zeros((batch, num_classes), jnp.float32)
  else:
    one_hot = jax.nn.one_hot(jnp.broadcast_to(y, (batch,)), num_classes, dtype=jnp.float32)
  if train and label_dropout:
    keep = jax.random.uniform(module.make_rng('dropout'), (batch, 1)) >= label_dropout
    one_hot = one_hot * keep
  return one_hot


def _check_inputs(name, x, r, multiple):
  if x.ndim != 4:
    raise ValueError(f'{name} expects images [B, H, W, C], got shape {x.shape}')
  if r is not None:
    raise ValueError(f'{name} takes one time (EDM\'s noise level); it cannot be a two-time flow map network')
  if x.shape[1] != x.shape[2] or x.shape[1] % multiple:
    raise ValueError(f'{name} needs square images whose side is divisible by {multiple}; got {x.shape[1:3]}')


def torch_name(path: Sequence[str]) -> str:
  """The PyTorch state-dict key of the flax parameter path `path` of these networks (and EDM2's): a module named
  'enc_<name>' or 'dec_<name>' is the entry <name> of EDM's ModuleDict `enc` or `dec`."""
  parts = []
  for part in path:
    for prefix in ('enc_', 'dec_'):
      if part.startswith(prefix):
        part = f'{prefix[:-1]}.{part[len(prefix):]}'
    parts.append(part)
  return '.'.join(parts)


class SongUNet(nn.Module):
  """EDM's `SongUNet`: DDPM++ (embedding_type 'positional', encoder 'standard', filter (1, 1)) and NCSN++
  ('fourier', 'residual', (1, 3, 3, 1), channel_mult_noise 2). Defaults are EDM's class defaults; the published
  CIFAR-10 networks are `PRESETS` in fewstep_jax.tools.import_checkpoint.

  Attributes follow EDM's names: model_channels (its base width), channel_mult, channel_mult_emb, num_blocks,
  attn_resolutions (feature-map sides with attention), dropout, label_dropout, embedding_type, channel_mult_noise,
  encoder_type ('standard', 'skip', 'residual'), decoder_type ('standard', 'skip'), resample_filter, augment_dim.
  num_classes is EDM's label_dim; attention picks the attention kernel (`attention.ATTENTION_IMPLS`); remat what the
  backward pass keeps of each UNetBlock (fewstep_jax.nn.remat).
  """
  model_channels: int = 128
  channel_mult: Sequence[int] = (1, 2, 2, 2)
  channel_mult_emb: int = 4
  num_blocks: int = 4
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.10
  label_dropout: float = 0.0
  embedding_type: str = 'positional'
  channel_mult_noise: int = 1
  encoder_type: str = 'standard'
  decoder_type: str = 'standard'
  resample_filter: Sequence[float] = (1, 1)
  augment_dim: int = 0
  attention: str = 'xla'
  remat: str = 'none'
  num_classes: int = 0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  two_times = False  # One time input (not a field: EDM's networks cannot be flow maps).

  @nn.compact
  def __call__(self, x, t, r=None, y=None, *, train: bool = False):
    """x: [B, H, W, C] (EDM's c_in x), t: [B] (c_noise), y: [B] int labels or None -> [B, H, W, C] float32."""
    if self.embedding_type not in ('fourier', 'positional'):
      raise ValueError(f"SongUNet embedding_type must be 'fourier' or 'positional', got {self.embedding_type!r}")
    if self.encoder_type not in ('standard', 'skip', 'residual') or self.decoder_type not in ('standard', 'skip'):
      raise ValueError(f'SongUNet encoder_type {self.encoder_type!r} / decoder_type {self.decoder_type!r} unknown')
    _check_inputs('SongUNet', x, r, 2 ** (len(self.channel_mult) - 1))
    batch, resolution, _, out_channels = x.shape
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (batch,))
    emb_channels = self.model_channels * self.channel_mult_emb
    noise_channels = self.model_channels * self.channel_mult_noise
    init = (('init_mode', 'xavier_uniform'),)
    init_zero = (('init_mode', 'xavier_uniform'), ('init_weight', 1e-5))
    init_attn = (('init_mode', 'xavier_uniform'), ('init_weight', math.sqrt(0.2)))
    dtype = self.dtype
    block = lambda out, name, **kwargs: remat_block(UNetBlock, self.remat, (3,))(
        out, num_heads=1, dropout=self.dropout, skip_scale=math.sqrt(0.5), eps=1e-6,
        filter_taps=tuple(self.resample_filter), resample_proj=True, adaptive_scale=False, init=init,
        init_zero=init_zero, init_attn=init_attn, attention_impl=self.attention, dtype=dtype, name=name, **kwargs)
    linear = lambda features, name, **kwargs: Linear(features, init_mode='xavier_uniform', dtype=jnp.float32,
                                                     name=name, **kwargs)

    # Mapping.
    if self.embedding_type == 'positional':
      emb = positional_embedding(t, noise_channels, endpoint=True)
    else:
      emb = FourierEmbedding(noise_channels, name='map_noise')(t)
    emb = jnp.concatenate(jnp.split(emb, 2, axis=1)[::-1], axis=1)  # EDM swaps to [sin, cos].
    if self.num_classes:
      labels = _labels(self, y, batch, self.num_classes, self.label_dropout, train)
      emb = emb + linear(noise_channels, 'map_label')(labels * math.sqrt(self.num_classes))
    if self.augment_dim:  # Created for the checkpoint; no augmentation labels are ever passed (see the docstring).
      linear(noise_channels, 'map_augment', use_bias=False)(jnp.zeros((batch, self.augment_dim)))
    emb = nn.silu(linear(emb_channels, 'map_layer0')(emb))
    emb = nn.silu(linear(emb_channels, 'map_layer1')(emb)).astype(dtype)

    # Encoder.
    h = x.astype(dtype)
    aux = h
    skips = []
    cout = out_channels
    for level, mult in enumerate(self.channel_mult):
      res = resolution >> level
      if level == 0:
        cout = self.model_channels
        h = Conv2d(cout, 3, dtype=dtype, name=f'enc_{res}x{res}_conv', **dict(init))(h)
        skips.append(h)
      else:
        h = block(cout, f'enc_{res}x{res}_down', down=True)(h, emb, train)
        skips.append(h)
        if self.encoder_type == 'skip':
          aux = Conv2d(aux.shape[-1], 0, down=True, filter_taps=tuple(self.resample_filter), dtype=dtype,
                       name=f'enc_{res}x{res}_aux_down')(aux)
          h = skips[-1] = h + Conv2d(cout, 1, dtype=dtype, name=f'enc_{res}x{res}_aux_skip', **dict(init))(aux)
        if self.encoder_type == 'residual':
          residual = Conv2d(cout, 3, down=True, filter_taps=tuple(self.resample_filter), fused_resample=True,
                            dtype=dtype, name=f'enc_{res}x{res}_aux_residual', **dict(init))(aux)
          h = skips[-1] = aux = (h + residual) / math.sqrt(2)
      for idx in range(self.num_blocks):
        cout = self.model_channels * mult
        h = block(cout, f'enc_{res}x{res}_block{idx}', attention=res in self.attn_resolutions)(h, emb, train)
        skips.append(h)

    # Decoder.
    aux = None
    for level, mult in reversed(list(enumerate(self.channel_mult))):
      res = resolution >> level
      if level == len(self.channel_mult) - 1:
        h = block(cout, f'dec_{res}x{res}_in0', attention=True)(h, emb, train)
        h = block(cout, f'dec_{res}x{res}_in1')(h, emb, train)
        self.sow('intermediates', 'bottleneck', h)  # What nn.make_features reads (score distillation's GAN head).
      else:
        h = block(cout, f'dec_{res}x{res}_up', up=True)(h, emb, train)
      for idx in range(self.num_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        cout = self.model_channels * mult
        attn = idx == self.num_blocks and res in self.attn_resolutions
        h = block(cout, f'dec_{res}x{res}_block{idx}', attention=attn)(h, emb, train)
      if self.decoder_type == 'skip' or level == 0:
        if self.decoder_type == 'skip' and level < len(self.channel_mult) - 1:
          aux = Conv2d(out_channels, 0, up=True, filter_taps=tuple(self.resample_filter), dtype=dtype,
                       name=f'dec_{res}x{res}_aux_up')(aux)
        tmp = GroupNorm(eps=1e-6, dtype=dtype, name=f'dec_{res}x{res}_aux_norm')(h)
        tmp = Conv2d(out_channels, 3, dtype=dtype, name=f'dec_{res}x{res}_aux_conv', **dict(init_zero))(nn.silu(tmp))
        aux = tmp if aux is None else tmp + aux
    return aux.astype(jnp.float32)


class DhariwalUNet(nn.Module):
  """EDM's `DhariwalUNet` (ADM). Defaults are EDM's class defaults, which are its ImageNet-64 network's; attributes
  as in SongUNet (model_channels, channel_mult, channel_mult_emb, num_blocks, attn_resolutions, dropout,
  label_dropout, augment_dim, attention, remat)."""
  model_channels: int = 192
  channel_mult: Sequence[int] = (1, 2, 3, 4)
  channel_mult_emb: int = 4
  num_blocks: int = 3
  attn_resolutions: Sequence[int] = (32, 16, 8)
  dropout: float = 0.10
  label_dropout: float = 0.0
  augment_dim: int = 0
  attention: str = 'xla'
  remat: str = 'none'
  num_classes: int = 0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  two_times = False

  @nn.compact
  def __call__(self, x, t, r=None, y=None, *, train: bool = False):
    """x: [B, H, W, C] (EDM's c_in x), t: [B] (c_noise), y: [B] int labels or None -> [B, H, W, C] float32."""
    _check_inputs('DhariwalUNet', x, r, 2 ** (len(self.channel_mult) - 1))
    batch, resolution, _, out_channels = x.shape
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (batch,))
    emb_channels = self.model_channels * self.channel_mult_emb
    init = (('init_mode', 'kaiming_uniform'), ('init_weight', math.sqrt(1 / 3)), ('init_bias', math.sqrt(1 / 3)))
    init_zero = (('init_mode', 'kaiming_uniform'), ('init_weight', 0.0), ('init_bias', 0.0))
    dtype = self.dtype
    block = lambda out, name, **kwargs: remat_block(UNetBlock, self.remat, (3,))(
        out, channels_per_head=64, dropout=self.dropout, init=init, init_zero=init_zero,
        attention_impl=self.attention, dtype=dtype, name=name, **kwargs)

    # Mapping.
    emb = positional_embedding(t, self.model_channels)
    if self.augment_dim:  # Created for the checkpoint; never given labels (see the module docstring).
      Linear(self.model_channels, use_bias=False, name='map_augment', **dict(init_zero))(
          jnp.zeros((batch, self.augment_dim)))
    emb = nn.silu(Linear(emb_channels, name='map_layer0', **dict(init))(emb))
    emb = Linear(emb_channels, name='map_layer1', **dict(init))(emb)
    if self.num_classes:
      labels = _labels(self, y, batch, self.num_classes, self.label_dropout, train)
      emb = emb + Linear(emb_channels, use_bias=False, init_mode='kaiming_normal',
                         init_weight=math.sqrt(self.num_classes), name='map_label')(labels)
    emb = nn.silu(emb).astype(dtype)

    # Encoder.
    h = x.astype(dtype)
    skips = []
    cout = out_channels
    for level, mult in enumerate(self.channel_mult):
      res = resolution >> level
      if level == 0:
        cout = self.model_channels * mult
        h = Conv2d(cout, 3, dtype=dtype, name=f'enc_{res}x{res}_conv', **dict(init))(h)
      else:
        h = block(cout, f'enc_{res}x{res}_down', down=True)(h, emb, train)
      skips.append(h)
      for idx in range(self.num_blocks):
        cout = self.model_channels * mult
        h = block(cout, f'enc_{res}x{res}_block{idx}', attention=res in self.attn_resolutions)(h, emb, train)
        skips.append(h)

    # Decoder.
    for level, mult in reversed(list(enumerate(self.channel_mult))):
      res = resolution >> level
      if level == len(self.channel_mult) - 1:
        h = block(cout, f'dec_{res}x{res}_in0', attention=True)(h, emb, train)
        h = block(cout, f'dec_{res}x{res}_in1')(h, emb, train)
        self.sow('intermediates', 'bottleneck', h)
      else:
        h = block(cout, f'dec_{res}x{res}_up', up=True)(h, emb, train)
      for idx in range(self.num_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        cout = self.model_channels * mult
        h = block(cout, f'dec_{res}x{res}_block{idx}', attention=res in self.attn_resolutions)(h, emb, train)
    h = GroupNorm(dtype=dtype, name='out_norm')(h)
    return Conv2d(out_channels, 3, dtype=dtype, name='out_conv', **dict(init_zero))(nn.silu(h)).astype(jnp.float32)

"""EDM2's magnitude-preserving U-Net (Karras et al., 2024) in flax, with the published pickles' parameter layout.

Followed line by line: `training/networks_edm2.py` of the EDM2 repository (`normalize`, `resample`, `mp_silu`,
`mp_sum`, `mp_cat`, `MPFourier`, `MPConv`, `Block`, `UNet`, and the uncertainty head of `Precond`). Parameters keep
PyTorch's names and layouts, so that `unet.enc.64x64_block0.conv_res0.weight` is the flax path
`('unet', 'enc_64x64_block0', 'conv_res0', 'weight')` (`edm_unets.torch_name`) and an import is a renaming.
Activations are NHWC.

A raw network: `module.apply(params, c_in x, c_noise, None, y)` returns Precond's F_x (c_noise = ln(sigma) / 4),
and with `logvar_head` also Precond's u(sigma) = logvar_linear(logvar_fourier(c_noise)) [B], EDM2's learned
uncertainty (its loss weighting). The `edm` readout adds EDM's preconditioning, which is Precond's. Labels are one-hot
times sqrt(num_classes) as in EDM2; the null label (None, or y = num_classes) is the zero vector.

Forced weight normalisation. EDM2's `MPConv.forward` re-normalises its stored weight in place at every training
forward pass. A pure forward pass cannot write its parameters, so the same rule is the network's `project_params`,
which the trainer applies to a trained network's parameters at initialisation and after every optimizer update
(`TrainedNetwork`); `forced_weight_norm=False` turns it off. That is EDM2's arithmetic: its forward pass at step k
sees normalize(w_{k-1} + update_{k-1}) and so does ours, through the same gradients and Adam state. The EMA copies
average the parameters before the projection, as EDM2's do (its EMA update follows the optimizer step, before the
next forward pass normalises). Both passes of a self-distillation target see the same projected weights, which is
what ECT's `disable_forced_wn` around its target pass achieves.

Deviations:
  - The Fourier features' frequencies and phases (buffers in EDM2) are parameters behind a stop-gradient.
  - `clip_act = 0` stands for EDM2's None (no clipping), `channel_mult_noise = 0` / `channel_mult_emb = 0` for its
    None (chosen from channel_mult).
"""
import math
from typing import Sequence

import flax.linen as nn
from flax.typing import Dtype
import jax
from jax import lax
import jax.numpy as jnp

from fewstep_jax.nn import attention as attention_lib
from fewstep_jax.nn import edm_unets
from fewstep_jax.nn.remat import remat_block


def normalize(x, axes, eps: float = 1e-4):
  """EDM2's `normalize`: x / (eps + ||x|| / sqrt(n)) with the norm (float32) over `axes` holding n elements."""
  axes = tuple(axes)
  n = math.prod(x.shape[a] for a in axes)
  norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=axes, keepdims=True))
  return x / (eps + norm / math.sqrt(n)).astype(x.dtype)


def mp_silu(x):
  return nn.silu(x) / 0.596


def mp_sum(a, b, t: float = 0.5):
  return (a + t * (b - a)) / math.sqrt((1 - t) ** 2 + t ** 2)


def mp_cat(a, b, t: float = 0.5):
  """EDM2's `mp_cat` on the channel (last) axis."""
  na, nb = a.shape[-1], b.shape[-1]
  scale = math.sqrt((na + nb) / ((1 - t) ** 2 + t ** 2))
  return jnp.concatenate([scale / math.sqrt(na) * (1 - t) * a, scale / math.sqrt(nb) * t * b], axis=-1)


def resample(x, taps, mode: str):
  """EDM2's `resample` ('keep', 'down', 'up') of x [B, H, W, C] by the filter `taps`."""
  if mode == 'keep':
    return x
  f = edm_unets.resample_filter(taps)
  pad = (len(taps) - 1) // 2
  if mode == 'down':
    return edm_unets._depthwise(x, f, stride=2, padding=pad, transpose=False)
  return edm_unets._depthwise(x, f * 4, stride=2, padding=pad, transpose=True)


class MPFourier(nn.Module):
  """EDM2's `MPFourier`: sqrt(2) cos(x freqs + phases); freqs ~ 2 pi N(0, bandwidth^2), phases ~ 2 pi U(0, 1)."""
  num_channels: int
  bandwidth: float = 1.0

  @nn.compact
  def __call__(self, x):
    freqs = self.param('freqs', lambda key, shape: 2 * math.pi * self.bandwidth * jax.random.normal(key, shape),
                       (self.num_channels,))
    phases = self.param('phases', lambda key, shape: 2 * math.pi * jax.random.uniform(key, shape),
                        (self.num_channels,))
    y = jnp.outer(x.astype(jnp.float32), lax.stop_gradient(freqs)) + lax.stop_gradient(phases)
    return jnp.cos(y) * math.sqrt(2)


class MPConv(nn.Module):
  """EDM2's `MPConv`: a weight-normalised linear layer (kernel ()) or convolution, weight [out, in, *kernel], scaled
  by gain / sqrt(fan_in)."""
  out_channels: int
  kernel: tuple = ()
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, gain=1.0):
    in_channels = x.shape[-1]
    w = self.param('weight', nn.initializers.normal(1.0), (self.out_channels, in_channels) + tuple(self.kernel))
    w = normalize(w.astype(jnp.float32), range(1, w.ndim))
    w = (w * (gain / math.sqrt(math.prod(w.shape[1:])))).astype(self.dtype)
    x = x.astype(self.dtype)
    if w.ndim == 2:
      return x @ w.T
    pad = w.shape[-1] // 2
    return lax.conv_general_dilated(x, w, (1, 1), [(pad, pad)] * 2, dimension_numbers=('NHWC', 'OIHW', 'NHWC'))


class Block(nn.Module):
  """EDM2's `Block` (its Figure 21): flavor 'enc' or 'dec', resample_mode 'keep', 'up' or 'down'."""
  out_channels: int
  flavor: str = 'enc'
  resample_mode: str = 'keep'
  resample_filter: Sequence[float] = (1, 1)
  attention: bool = False
  channels_per_head: int = 64
  dropout: float = 0.0
  res_balance: float = 0.3
  attn_balance: float = 0.3
  clip_act: float = 256.0
  attention_impl: str = 'xla'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, emb, train: bool):
    in_channels, out = x.shape[-1], self.out_channels
    heads = out // self.channels_per_head if self.attention else 0
    conv = lambda channels, kernel, name: MPConv(channels, kernel, dtype=self.dtype, name=name)
    emb_gain = self.param('emb_gain', nn.initializers.zeros, ())
    x = resample(x, self.resample_filter, self.resample_mode)
    # Submodules are created in EDM2's order of __init__ so that the parameter names match.
    conv_res0 = conv(out, (3, 3), 'conv_res0')
    emb_linear = conv(out, (), 'emb_linear')
    conv_res1 = conv(out, (3, 3), 'conv_res1')
    conv_skip = conv(out, (1, 1), 'conv_skip') if in_channels != out else None
    if self.flavor == 'enc':
      if conv_skip is not None:
        x = conv_skip(x)
      x = normalize(x, (-1,))  # Pixel norm.
    y = conv_res0(mp_silu(x))
    c = emb_linear(emb, gain=emb_gain) + 1
    y = mp_silu(y * c[:, None, None, :].astype(y.dtype))
    y = nn.Dropout(self.dropout)(y, deterministic=not train)
    y = conv_res1(y)
    if self.flavor == 'dec' and conv_skip is not None:
      x = conv_skip(x)
    x = mp_sum(x, y, self.res_balance)

    if heads:
      batch, height, width, _ = x.shape
      # EDM2 splits the 3C channels as [heads, C / heads, (q, k, v)] and pixel-normalises each head's vectors.
      y = conv(out * 3, (1, 1), 'attn_qkv')(x).reshape(batch, height * width, heads, out // heads, 3)
      y = normalize(y, (3,))
      a = attention_lib.attention(y[..., 0], y[..., 1], y[..., 2], impl=self.attention_impl).reshape(x.shape)
      x = mp_sum(x, conv(out, (1, 1), 'attn_proj')(a), self.attn_balance)
    if self.clip_act:
      x = jnp.clip(x, -self.clip_act, self.clip_act)
    return x


class _UNetBody(nn.Module):
  """EDM2's `UNet` (named 'unet' inside EDM2UNet, as inside EDM2's Precond)."""
  model_channels: int
  channel_mult: Sequence[int]
  channel_mult_noise: int
  channel_mult_emb: int
  num_blocks: int
  attn_resolutions: Sequence[int]
  label_balance: float
  concat_balance: float
  block_kwargs: tuple
  num_classes: int
  dtype: Dtype
  dropout_res: int = 0
  remat: str = 'none'

  @nn.compact
  def __call__(self, x, c_noise, y, train: bool):
    batch, resolution, _, channels = x.shape
    cblock = [self.model_channels * m for m in self.channel_mult]
    cnoise = self.model_channels * self.channel_mult_noise if self.channel_mult_noise else cblock[0]
    cemb = self.model_channels * self.channel_mult_emb if self.channel_mult_emb else max(cblock)
    out_gain = self.param('out_gain', nn.initializers.zeros, ())

    def block(out, name, res, **kwargs):
      block_kwargs = dict(self.block_kwargs)
      if self.dropout_res and res > self.dropout_res:  # ECT's `dropout_res`: dropout only at coarse resolutions.
        block_kwargs['dropout'] = 0.0
      return remat_block(Block, self.remat, (3,))(out, dtype=self.dtype, name=name, **block_kwargs, **kwargs)

    emb = MPConv(cemb, (), name='emb_noise')(MPFourier(cnoise, name='emb_fourier')(c_noise))
    if self.num_classes:
      labels = edm_unets._labels(self, y, batch, self.num_classes, 0.0, False)
      label_emb = MPConv(cemb, (), name='emb_label')(labels * math.sqrt(self.num_classes))
      emb = mp_sum(emb, label_emb, self.label_balance)
    emb = mp_silu(emb).astype(self.dtype)

    h = jnp.concatenate([x.astype(self.dtype), jnp.ones_like(x[..., :1], self.dtype)], axis=-1)
    skips = []
    for level, width in enumerate(cblock):
      res = resolution >> level
      if level == 0:
        h = MPConv(width, (3, 3), dtype=self.dtype, name=f'enc_{res}x{res}_conv')(h)
      else:
        h = block(h.shape[-1], f'enc_{res}x{res}_down', res, flavor='enc', resample_mode='down')(h, emb, train)
      skips.append(h)
      for idx in range(self.num_blocks):
        h = block(width, f'enc_{res}x{res}_block{idx}', res, flavor='enc',
                  attention=res in self.attn_resolutions)(h, emb, train)
        skips.append(h)

    for level, width in reversed(list(enumerate(cblock))):
      res = resolution >> level
      if level == len(cblock) - 1:
        h = block(h.shape[-1], f'dec_{res}x{res}_in0', res, flavor='dec', attention=True)(h, emb, train)
        h = block(h.shape[-1], f'dec_{res}x{res}_in1', res, flavor='dec')(h, emb, train)
        self.sow('intermediates', 'bottleneck', h)
      else:
        h = block(h.shape[-1], f'dec_{res}x{res}_up', res, flavor='dec', resample_mode='up')(h, emb, train)
      for idx in range(self.num_blocks + 1):
        h = mp_cat(h, skips.pop(), self.concat_balance)
        h = block(width, f'dec_{res}x{res}_block{idx}', res, flavor='dec',
                  attention=res in self.attn_resolutions)(h, emb, train)
    return MPConv(channels, (3, 3), dtype=self.dtype, name='out_conv')(h, gain=out_gain)


class EDM2UNet(nn.Module):
  """EDM2's network: its `UNet` (parameters under 'unet') plus Precond's uncertainty head (`logvar_fourier`,
  `logvar_linear`). Defaults are EDM2's class defaults (its S width, model_channels 192); the published sizes differ
  in model_channels (XS 128, S 192, M 256, L 320, XL 384, XXL 448) and dropout.

  Attributes follow EDM2's names; block arguments (resample_filter, channels_per_head, dropout, res_balance,
  attn_balance, clip_act) are fields here. logvar_head: also return u(sigma) [B] (its parameters exist either way). forced_weight_norm: training keeps
  every weight at unit RMS norm per output channel (`project_params`). dropout_res: dropout only in blocks at
  resolutions <= dropout_res (ECT's `imgnet` branch of `training/networks_edm2.py`; 0, EDM2's None: everywhere).
  attention picks the attention kernel (`attention.ATTENTION_IMPLS`); remat what the backward pass keeps of each
  Block (fewstep_jax.nn.remat).
  """
  model_channels: int = 192
  channel_mult: Sequence[int] = (1, 2, 3, 4)
  channel_mult_noise: int = 0
  channel_mult_emb: int = 0
  num_blocks: int = 3
  attn_resolutions: Sequence[int] = (16, 8)
  label_balance: float = 0.5
  concat_balance: float = 0.5
  resample_filter: Sequence[float] = (1, 1)
  channels_per_head: int = 64
  dropout: float = 0.0
  res_balance: float = 0.3
  attn_balance: float = 0.3
  clip_act: float = 256.0
  logvar_channels: int = 128
  logvar_head: bool = True
  forced_weight_norm: bool = True
  dropout_res: int = 0
  attention: str = 'xla'
  remat: str = 'none'
  num_classes: int = 0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  two_times = False
  # Fields that change no parameter (runs.network_differences): the uncertainty head's parameters exist either way,
  # as in EDM2's Precond, so a student without the head starts from a published network that has it.
  parameter_free_fields = ('logvar_head', 'forced_weight_norm', 'dropout_res')

  def project_params(self, params):
    """EDM2's forced weight normalisation: every MPConv weight (the leaves named 'weight'; the gains and Fourier
    buffers have other names) replaced by normalize(w) over its input axes, in float32, in its own dtype."""
    if not self.forced_weight_norm:
      return params

    def project(path, leaf):
      if getattr(path[-1], 'key', None) != 'weight':
        return leaf
      return normalize(leaf.astype(jnp.float32), range(1, leaf.ndim)).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(project, params)

  @nn.compact
  def __call__(self, x, t, r=None, y=None, *, train: bool = False):
    """x: [B, H, W, C] (c_in x), t: [B] (c_noise), y: [B] int labels or None -> F_x [B, H, W, C] float32, and
    logvar [B] with logvar_head."""
    edm_unets._check_inputs('EDM2UNet', x, r, 2 ** (len(self.channel_mult) - 1))
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
    block_kwargs = (('resample_filter', tuple(self.resample_filter)), ('channels_per_head', self.channels_per_head),
                    ('dropout', self.dropout), ('res_balance', self.res_balance),
                    ('attn_balance', self.attn_balance), ('clip_act', self.clip_act),
                    ('attention_impl', self.attention))
    out = _UNetBody(self.model_channels, tuple(self.channel_mult), self.channel_mult_noise, self.channel_mult_emb,
                    self.num_blocks, tuple(self.attn_resolutions), self.label_balance, self.concat_balance,
                    block_kwargs, self.num_classes, self.dtype, self.dropout_res, self.remat, name='unet')(
                        x, t, y, train)
    # Created with or without logvar_head (dead code under jit without it), as EDM2's Precond always holds them.
    logvar = MPConv(1, (), name='logvar_linear')(MPFourier(self.logvar_channels, name='logvar_fourier')(t))[:, 0]
    out = out.astype(jnp.float32)
    return (out, logvar.astype(jnp.float32)) if self.logvar_head else out

"""OpenAI's U-Net as the consistency-models code ships it (guided-diffusion's `UNetModel`), in flax, with its
checkpoints' parameter layout: the network of CM's published EDM teacher `edm_imagenet64_ema.pt`, which CM's and
CTM's ImageNet-64 rows distil, and with `two_times` CTM's student variant of it (sony/ctm code/cm/unet.py).

Followed line by line: `cm/unet.py` of openai/consistency_models (`UNetModel`, `ResBlock`, `AttentionBlock`,
`QKVFlashAttention` / `QKVAttentionLegacy`, `Upsample`, `Downsample`) and `cm/nn.py` (`GroupNorm32`,
`timestep_embedding`). Parameters keep PyTorch's names and layouts: the torch key `input_blocks.1.0.in_layers.0.weight`
is the flax path `('input_blocks__1', '0', 'in_layers__0', 'weight')` (`torch_name`: a double underscore is a dot).
Activations are NHWC.

A raw network: `module.apply(params, c_in x, c_noise, None, y)` with the project's `edm` readout's c_noise =
ln(sigma) / 4 returns CM's model output; `time_scale` (1000) makes the network's time input CM's
`1000 * 0.25 * log(sigma)` (`KarrasDenoiser.denoise`), whose c_skip, c_out and c_in are EDM's, so the `edm` readout
reads the teacher exactly. Attention resolutions are downsampling factors, as `UNetModel` takes them (ImageNet-64's
"32,16,8" is (2, 4, 8)).

Deviations:
  - CM's class-conditional networks have no null label: an unconditional call (y None, or y = num_classes) adds no
    label embedding, which the network never saw in training; CM's and CTM's ImageNet-64 rows use no guidance.
  - The legacy attention's half-precision cast and `use_fp16` are not carried over: the compute dtype is
    train.compute_dtype.
  - Fresh initialisation (only where no checkpoint provides the weights, e.g. CTM's s layers) is EDM's
    Kaiming-uniform, not PyTorch's default; the zero-initialised layers are zero as in `zero_module`.
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


def torch_name(path: Sequence[str]) -> str:
  """The PyTorch state-dict key of a flax parameter path of this network."""
  return '.'.join(part.replace('__', '.') for part in path)


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
  """cm/nn.py's `timestep_embedding`: [cos(t f), sin(t f)] with f = max_period^(-i / half), zero-padded if dim is
  odd. t: [B] -> [B, dim]."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None]
  embedding = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  return jnp.pad(embedding, ((0, 0), (0, dim % 2)))


def group_norm(name: str, dtype):
  """GroupNorm32: 32 groups (the channels must be a multiple of 32, as in PyTorch), eps 1e-5, float32 statistics."""
  return edm_unets.GroupNorm(num_groups=32, min_channels_per_group=1, eps=1e-5, dtype=dtype, name=name)


def conv(channels: int, kernel: int, name: str, dtype=jnp.float32, zero: bool = False):
  """A torch-layout convolution with bias, padding kernel // 2 (zero_module's for the zero-initialised ones)."""
  return edm_unets.Conv2d(channels, kernel, init_mode='kaiming_uniform', init_weight=0.0 if zero else 1.0,
                          dtype=dtype, name=name)


def downsample_by_pooling(x):
  """Downsample without a convolution: a 2x2 average pool, stride 2."""
  batch, height, width, channels = x.shape
  return x.reshape(batch, height // 2, 2, width // 2, 2, channels).mean(axis=(2, 4))


def upsample_nearest(x):
  """F.interpolate(scale_factor=2, mode='nearest')."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class ResBlock(nn.Module):
  """`ResBlock`: GroupNorm, SiLU, 3x3 conv; the time embedding as a scale and shift of the second norm
  (use_scale_shift_norm) or added; dropout; a zero-initialised 3x3 conv; a 1x1 skip when the width changes.
  up / down resample both paths inside the block (resblock_updown)."""
  out_channels: int
  dropout: float
  use_scale_shift_norm: bool
  up: bool = False
  down: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, embeddings, train: bool):
    """embeddings: (emb [B, E], emb_s [B, E] of CTM's second time, or None)."""
    emb, emb_s = embeddings
    channels, out = x.shape[-1], self.out_channels
    resample = upsample_nearest if self.up else downsample_by_pooling if self.down else None
    h = nn.silu(group_norm('in_layers__0', self.dtype)(x))
    if resample is not None:
      h, x = resample(h), resample(x)
    h = conv(out, 3, 'in_layers__2', self.dtype)(h)
    width = 2 * out if self.use_scale_shift_norm else out
    emb_layer = lambda name: edm_unets.Linear(width, init_mode='kaiming_uniform', dtype=self.dtype, name=name)
    emb_out = emb_layer('emb_layers__1')(nn.silu(emb))
    if emb_s is not None:  # CTM's `emb_layers_s`, added to the first time's.
      emb_out = emb_out + emb_layer('emb_layers_s__1')(nn.silu(emb_s))
    emb_out = emb_out[:, None, None, :]
    norm = group_norm('out_layers__0', self.dtype)
    if self.use_scale_shift_norm:
      scale, shift = jnp.split(emb_out, 2, axis=-1)
      h = norm(h) * (1 + scale) + shift
    else:
      h = norm(h + emb_out)
    h = nn.Dropout(self.dropout)(nn.silu(h), deterministic=not train)
    h = conv(out, 3, 'out_layers__3', self.dtype, zero=True)(h)
    skip = x if out == channels else conv(out, 1, 'skip_connection', self.dtype)(x)
    return skip + h


class AttentionBlock(nn.Module):
  """`AttentionBlock`: GroupNorm, a 1x1 qkv projection whose 3C channels are [(q, k, v), heads, head_dim] (the
  flash and legacy kernels' "b (three h d) s"), softmax attention scaled by 1 / sqrt(head_dim), a zero-initialised
  projection, residual."""
  num_heads: int
  num_head_channels: int
  attention_impl: str = 'xla'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    batch, height, width, channels = x.shape
    heads = channels // self.num_head_channels if self.num_head_channels > 0 else self.num_heads
    # dims=2: qkv and proj_out are 1x1 Conv2d layers ([out, in, 1, 1] weights).
    qkv = conv(3 * channels, 1, 'qkv', self.dtype)(group_norm('norm', self.dtype)(x))
    qkv = qkv.reshape(batch, height * width, 3, heads, channels // heads)
    h = attention_lib.attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], impl=self.attention_impl)
    return x + conv(channels, 1, 'proj_out', self.dtype, zero=True)(h.reshape(x.shape))


class Downsample(nn.Module):
  """`Downsample` with conv_resample: a 3x3 convolution of stride 2, padding 1 (its `op`)."""
  out_channels: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    in_channels = x.shape[-1]
    init = edm_unets.weight_init('kaiming_uniform', in_channels * 9, self.out_channels * 9)
    params = self.param('op', lambda key: {'weight': init(key, (self.out_channels, in_channels, 3, 3)),
                                           'bias': jnp.zeros((self.out_channels,))})
    x = lax.conv_general_dilated(x.astype(self.dtype), params['weight'].astype(self.dtype), (2, 2), [(1, 1)] * 2,
                                 dimension_numbers=('NHWC', 'OIHW', 'NHWC'))
    return x + params['bias'].astype(self.dtype)


class Upsample(nn.Module):
  """`Upsample` with conv_resample: nearest 2x, then a 3x3 convolution (its `conv`)."""
  out_channels: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return conv(self.out_channels, 3, 'conv', self.dtype)(upsample_nearest(x))


# The layers of a TimestepEmbedSequential by kind: (module class, whether it takes the embedding).
LAYERS = {'conv': (lambda **kwargs: conv(kernel=3, **kwargs), False), 'res': (ResBlock, True),
          'attn': (AttentionBlock, False), 'down': (Downsample, False), 'up': (Upsample, False)}


class Sequential(nn.Module):
  """`TimestepEmbedSequential`: layers named by their position, (kind, keyword arguments) each."""
  layers: tuple

  @nn.compact
  def __call__(self, h, emb, train: bool):
    for position, (kind, kwargs) in enumerate(self.layers):
      make, takes_embedding = LAYERS[kind]
      layer = make(name=str(position), **dict(kwargs))
      h = layer(h, emb, train) if takes_embedding else layer(h)
    return h


class CMUNet(nn.Module):
  """CM's `UNetModel`. Defaults are `model_and_diffusion_defaults()` of cm/script_util.py at 64 px; the published
  ImageNet-64 teacher is the preset `cm_imagenet64` of fewstep_jax.tools.import_checkpoint.

  Attributes follow UNetModel's names; attention_ds are its `attention_resolutions` (downsampling factors),
  num_head_channels 0 stands for its -1 (use num_heads), learn_sigma doubles the output width (the variance half
  unused), time_scale multiplies the time inputs (see the module docstring), two_times adds CTM's second time s
  (sony/ctm code/cm/unet.py: `time_embed_s` and each ResBlock's `emb_layers_s`, whose output is added to the first
  time's), attention picks the attention kernel, remat what the backward pass keeps of each of its blocks (a
  TimestepEmbedSequential; fewstep_jax.nn.remat).
  """
  model_channels: int = 128
  channel_mult: Sequence[float] = (1, 2, 3, 4)
  num_res_blocks: int = 2
  attention_ds: Sequence[int] = (2, 4, 8)
  dropout: float = 0.0
  num_heads: int = 4
  num_head_channels: int = 0
  use_scale_shift_norm: bool = True
  resblock_updown: bool = False
  learn_sigma: bool = False
  time_scale: float = 1000.0
  two_times: bool = False
  attention: str = 'xla'
  remat: str = 'none'
  num_classes: int = 0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, t, r=None, y=None, *, train: bool = False):
    """x: [B, H, W, C] (c_in x), t: [B] (ln(sigma) / 4), r: [B] CTM's second time s in the same units (two_times
    only; None: unconditioned on s, as CTM calls its teacher role), y: [B] labels or None -> [B, H, W, C] float32."""
    edm_unets._check_inputs('CMUNet', x, None, 2 ** (len(self.channel_mult) - 1))
    if r is not None and not self.two_times:
      raise ValueError('CMUNet takes a second time only with two_times=True (CTM\'s s embedding)')
    batch, channels = x.shape[0], x.shape[-1]
    dtype, mc = self.dtype, self.model_channels
    linear = lambda features, name: edm_unets.Linear(features, init_mode='kaiming_uniform', dtype=dtype, name=name)

    def time_embedding(time, name):
      time = jnp.broadcast_to(jnp.asarray(time, jnp.float32), (batch,)) * self.time_scale
      return linear(4 * mc, f'{name}__2')(nn.silu(linear(4 * mc, f'{name}__0')(timestep_embedding(time, mc))))

    emb = time_embedding(t, 'time_embed')
    emb_s = time_embedding(r, 'time_embed_s').astype(dtype) if r is not None else None  # CTM's `time_embed_s`.
    if self.num_classes:
      table = self.param('label_emb', lambda key: {'weight': jax.random.normal(key, (self.num_classes, 4 * mc))})
      labels = jnp.full((batch,), self.num_classes, jnp.int32) if y is None else jnp.broadcast_to(y, (batch,))
      real = (labels >= 0) & (labels < self.num_classes)  # The null label adds nothing (module docstring).
      emb = emb + jnp.where(real[:, None], table['weight'][jnp.clip(labels, 0, self.num_classes - 1)], 0.0)
    embeddings = (emb.astype(dtype), emb_s)

    def res(out, **kwargs):
      return ('res', (('out_channels', out), ('dropout', self.dropout),
                      ('use_scale_shift_norm', self.use_scale_shift_norm), ('dtype', dtype)) + tuple(kwargs.items()))

    attend = ('attn', (('num_heads', self.num_heads), ('num_head_channels', self.num_head_channels),
                       ('attention_impl', self.attention), ('dtype', dtype)))
    sequential = remat_block(Sequential, self.remat, (3,))
    block = lambda name, *layers: lambda h: sequential(tuple(layers), name=name)(h, embeddings, train)

    ch = int(self.channel_mult[0] * mc)
    h = block('input_blocks__0', ('conv', (('channels', ch), ('dtype', dtype))))(x.astype(dtype))
    skips, index, ds = [h], 1, 1
    for level, mult in enumerate(self.channel_mult):
      for _ in range(self.num_res_blocks):
        ch = int(mult * mc)
        h = block(f'input_blocks__{index}', res(ch), *([attend] if ds in self.attention_ds else []))(h)
        skips.append(h)
        index += 1
      if level != len(self.channel_mult) - 1:
        down = res(ch, down=True) if self.resblock_updown else ('down', (('out_channels', ch), ('dtype', dtype)))
        h = block(f'input_blocks__{index}', down)(h)
        skips.append(h)
        index += 1
        ds *= 2

    h = block('middle_block', res(ch), attend, res(ch))(h)
    self.sow('intermediates', 'bottleneck', h)

    index = 0
    for level, mult in list(enumerate(self.channel_mult))[::-1]:
      for i in range(self.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        ch = int(mc * mult)
        layers = [res(ch)] + ([attend] if ds in self.attention_ds else [])
        if level and i == self.num_res_blocks:
          layers.append(res(ch, up=True) if self.resblock_updown
                        else ('up', (('out_channels', ch), ('dtype', dtype))))
          ds //= 2
        h = block(f'output_blocks__{index}', *layers)(h)
        index += 1

    h = nn.silu(group_norm('out__0', dtype)(h))
    out_channels = 2 * channels if self.learn_sigma else channels
    h = conv(out_channels, 3, 'out__2', dtype, zero=True)(h)
    return h[..., :channels].astype(jnp.float32)

"""Stable Diffusion's U-Net (SD 1.5, SD 2.x, SDXL) in flax, with diffusers' `UNet2DConditionModel` parameter layout.

Followed: diffusers' `models/unets/unet_2d_condition.py` (`UNet2DConditionModel.__init__` and `forward`, with its
`get_time_embed` and SDXL's `text_time` branch of `get_aug_embed`), `models/unets/unet_2d_blocks.py`
(`CrossAttnDownBlock2D`, `DownBlock2D`, `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D`, `UpBlock2D`),
`models/resnet.py` (`ResnetBlock2D`), `models/downsampling.py` / `upsampling.py` (`Downsample2D`: 3x3 conv of
stride 2, padding 1; `Upsample2D`: nearest 2x, then a 3x3 conv), `models/transformers/transformer_2d.py`
(`Transformer2DModel` on continuous inputs: group norm with eps 1e-6, then 1x1-conv or linear projections),
`models/attention.py` (`BasicTransformerBlock` with layer norms, self-attention, cross-attention and a `FeedForward`
of `activations.GEGLU` with exact GELU), `models/attention_processor.py` (`Attention`: q, k, v without bias, an
output projection with bias, scale head_dim^-1/2) and `models/embeddings.py` (`get_timestep_embedding`,
`Timesteps`, `TimestepEmbedding` with its optional `cond_proj`).

A network is built from a diffusers config, the values of a published `unet/config.json` (`from_config`): a preset
name of `PRESETS` or a dict. The module's fields are those config keys with diffusers' defaults, so
`SDUNet()` is diffusers' `UNet2DConditionModel()`. Config keys this port reads only at diffusers' default value are
in `_FIXED`; a config that sets one otherwise is an error that names it. As in diffusers, `attention_head_dim` is
the number of attention heads per level (its historical misnomer: SD 1.5's 8 means 8 heads at every level, SDXL's
(5, 10, 20) 64-dimensional heads at 320, 640 and 1280 channels); diffusers refuses `num_attention_heads`, and so
does this port.

  unet, params = sd_unet.load('stable-diffusion-xl-base-1.0')      # a pipeline folder, its unet/ or a weights file
  eps = unet.apply({'params': params}, latents, timesteps, tokens, {'text_embeds': pooled, 'time_ids': time_ids})

with latents [B, H, W, 4] (NHWC; H and W multiples of 2^(levels - 1)), timesteps [B] float DDPM steps in [0, 1000),
tokens [B, L, cross_attention_dim] (the text encoder's hidden states), and for SDXL's `addition_embed_type='text_time'`
the pooled text embedding [B, 1280] and the six size and crop conditions [B, 6]. `timestep_cond` [B,
time_cond_proj_dim] is LCM's guidance-scale embedding, added to the sinusoidal timestep features before the time MLP;
leaving it out equals diffusers' call without it. The output is the prediction diffusers returns (epsilon, or v for
the v-prediction SD 2.x checkpoints), [B, H, W, out_channels] float32.

Parameters keep PyTorch's names and layouts (conv weights [out, in, kh, kw], linear weights [out, in]), as the
project's other ports do: `down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight` is the flax path
`('down_blocks_1', 'attentions_0', 'transformer_blocks_0', 'attn1', 'to_q', 'weight')` (`torch_name`). Loading
renames and checks; the fp16 variant and `.bin` files (through the restricted unpickler) read as the float32 file
does. Every attention goes through `fewstep_jax.nn.attention` (`attention` field: 'xla', 'cudnn', 'pallas').

Deviations: `upcast_attention` (SD 2.1's config sets it) is read and has no effect, since the attention logits are
float32 in every implementation here; latents whose size is not a multiple of 2^(levels - 1) are refused where
diffusers resizes the upsampled maps to the skip connections' odd sizes.

The registry's network 'sd_unet' is `SDUNetNetwork`: a preset under the project's call `apply(params, x, t, r, y,
key)` with the text condition as y (conditions.py's names: 'tokens', 'pooled', 'time_ids'), read through the
readouts 'sd' (epsilon) and 'sd_v' (v) of `paths` for the published weights, or any method's own for a U-Net trained
here (the preset 'digits'). `matching_preset` names the preset a published config.json builds, as
tools/import_checkpoint.py imports a pipeline's U-Net as a teacher.
"""
import json
import math
import os
import re
from typing import Any, Sequence

import flax.linen as nn
from flax.typing import Dtype
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from fewstep_jax import errors
from fewstep_jax import weight_files as weights
from fewstep_jax.nn import attention as attention_lib
from fewstep_jax.nn import edm_unets
from fewstep_jax.nn.layers import TorchLayerNorm
from fewstep_jax.nn.remat import remat_block

# The published unet/config.json values (runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-2-1,
# stabilityai/stable-diffusion-xl-base-1.0), keys at diffusers' default left out.
_SD_DOWN = ('CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D')
_SD_UP = ('UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D')
PRESETS: dict[str, dict[str, Any]] = {
    'sd15': dict(block_out_channels=(320, 640, 1280, 1280), down_block_types=_SD_DOWN, up_block_types=_SD_UP,
                 layers_per_block=2, attention_head_dim=8, cross_attention_dim=768, sample_size=64),
    'sd21_v': dict(block_out_channels=(320, 640, 1280, 1280), down_block_types=_SD_DOWN, up_block_types=_SD_UP,
                   layers_per_block=2, attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024,
                   use_linear_projection=True, upcast_attention=True, sample_size=96),
    'sdxl_base': dict(block_out_channels=(320, 640, 1280),
                      down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'),
                      up_block_types=('CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'),
                      layers_per_block=2, transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
                      cross_attention_dim=2048, use_linear_projection=True, addition_embed_type='text_time',
                      addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816, sample_size=128),
    # The embedded captioned digits (8x8x1): SD 1.5's blocks at two levels and 32 / 64 channels, for tests and
    # laptops; its cross-attention width is the tiny text encoder's (data/digits_text.py). SDXL's text_time
    # embedding adds the pooled caption (64) and the six size ids to the time embedding, so that the caption reaches
    # every resnet as the labelled digits' class embedding does: cross-attention alone, one word among 16 token
    # states, learnt the digit too slowly (caption accuracy near chance after 500 steps).
    'digits': dict(in_channels=1, out_channels=1, block_out_channels=(32, 64),
                   down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
                   up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), layers_per_block=1, attention_head_dim=2,
                   cross_attention_dim=64, addition_embed_type='text_time', addition_time_embed_dim=8,
                   projection_class_embeddings_input_dim=64 + 6 * 8, norm_num_groups=8, sample_size=8),
    # The published structures at tiny widths (every block type, SDXL's depths 1 / 2 / 2 and its text_time
    # embedding), for CPU runs of the text-to-image training step (experiments/text_to_image_step.py).
    'sd15_tiny': dict(block_out_channels=(16, 16, 32, 32), down_block_types=_SD_DOWN, up_block_types=_SD_UP,
                      layers_per_block=2, attention_head_dim=2, cross_attention_dim=32, norm_num_groups=8,
                      sample_size=16),
    'sdxl_tiny': dict(block_out_channels=(16, 32, 32),
                      down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'),
                      up_block_types=('CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'),
                      layers_per_block=2, transformer_layers_per_block=(1, 2, 2), attention_head_dim=(2, 2, 4),
                      cross_attention_dim=48, use_linear_projection=True, addition_embed_type='text_time',
                      addition_time_embed_dim=8, projection_class_embeddings_input_dim=32 + 6 * 8,
                      norm_num_groups=8, sample_size=16),
}
# SDXL's added conditions: the pooled text embedding and six size and crop numbers per image.
SDXL_TIME_IDS = 6

# diffusers config keys read only at this value (diffusers' default, or what its published U-Nets set).
_FIXED = {
    'act_fn': 'silu', 'center_input_sample': False, 'class_embed_type': None, 'class_embeddings_concat': False,
    'conv_in_kernel': 3, 'conv_out_kernel': 3, 'cross_attention_norm': None, 'downsample_padding': 1,
    'dropout': 0.0, 'dual_cross_attention': False, 'encoder_hid_dim': None, 'encoder_hid_dim_type': None,
    'mid_block_only_cross_attention': (None, False), 'mid_block_scale_factor': 1, 'mid_block_type':
    'UNetMidBlock2DCrossAttn', 'num_attention_heads': None, 'num_class_embeds': None, 'only_cross_attention': False,
    'resnet_out_scale_factor': 1.0, 'resnet_skip_time_act': False, 'resnet_time_scale_shift': 'default',
    'reverse_transformer_layers_per_block': None, 'time_embedding_act_fn': None, 'time_embedding_dim': None,
    'time_embedding_type': 'positional', 'timestep_post_act': None, 'attention_type': 'default',
}
# diffusers config keys that change nothing here: bookkeeping, the training resolution, the 'text' embedding's
# head count (unused by 'text_time'), and upcast_attention (the logits are float32 anyway).
_IGNORED = frozenset({'_class_name', '_diffusers_version', '_name_or_path', 'sample_size',
                      'addition_embed_type_num_heads', 'upcast_attention'})
_DOWN_TYPES = {'CrossAttnDownBlock2D': True, 'DownBlock2D': False}  # Block type -> has cross-attention.
_UP_TYPES = {'CrossAttnUpBlock2D': True, 'UpBlock2D': False}

# The published file names, in the order they are looked for (diffusers' variant='fp16' is the second).
WEIGHT_FILES = ('diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.fp16.safetensors',
                'diffusion_pytorch_model.bin', 'diffusion_pytorch_model.fp16.bin')
# torch ModuleList / Sequential containers: their flax entries are '<name>_<i>'.
_LISTS = ('down_blocks', 'up_blocks', 'resnets', 'attentions', 'transformer_blocks', 'downsamplers', 'upsamplers',
          'to_out', 'net')
_LIST_ENTRY = re.compile(rf'^({"|".join(_LISTS)})_(\d+)$')

# PyTorch's default initialisation of nn.Linear and nn.Conv2d, weight and bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
_TORCH_INIT = dict(init_mode='kaiming_uniform', init_weight=math.sqrt(1 / 3), init_bias=math.sqrt(1 / 3))


def _linear(features: int, name: str, dtype: Dtype, use_bias: bool = True):
  return edm_unets.Linear(features, use_bias=use_bias, dtype=dtype, name=name, **_TORCH_INIT)


def _conv(out_channels: int, kernel: int, name: str, dtype: Dtype):
  return edm_unets.Conv2d(out_channels, kernel, dtype=dtype, name=name, **_TORCH_INIT)


def _group_norm(groups: int, eps: float, name: str, dtype: Dtype):
  return edm_unets.GroupNorm(num_groups=groups, min_channels_per_group=1, eps=eps, dtype=dtype, name=name)


def guidance_scale_embedding(w: jax.Array, dim: int) -> jax.Array:
  """LCM's Fourier embedding of the guidance scale w [B] -> [B, dim], which diffusers' LCM pipelines pass as
  `timestep_cond` (`LatentConsistencyModelPipeline.get_guidance_scale_embedding`): 1000 w times the frequencies
  exp(-ln(10^4) i / (dim / 2 - 1)), i < dim / 2, as [sin, cos], zero-padded to an odd dim. It differs from the
  timestep features in two places, the denominator (half - 1, not half) and the order (sin first). w is LCM's: the
  teacher's guided prediction is cond + w (cond - uncond), so a pipeline's guidance_scale is w + 1."""
  half = dim // 2
  # diffusers' order of float32 operations. The phases reach 1000 w radians, where one float32 ulp is 5e-4 at w = 7.5,
  # so an exp rounded differently (torch's and XLA's differ in the last bit) moves a feature by that much.
  step = jnp.log(jnp.float32(10000.0)) / jnp.float32(half - 1)
  frequencies = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -step)
  angles = (1000.0 * jnp.asarray(w, jnp.float32))[:, None] * frequencies[None, :]
  features = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  return jnp.pad(features, ((0, 0), (0, dim % 2)))


def sinusoidal_features(t: jax.Array, dim: int, flip_sin_to_cos: bool, freq_shift: float,
                        max_period: float = 10000.0) -> jax.Array:
  """diffusers' get_timestep_embedding: [B] -> [B, dim] float32, [sin, cos] (or [cos, sin] flipped) of
  t * max_period^(-i / (dim / 2 - freq_shift))."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift))
  angles = t.astype(jnp.float32)[:, None] * freqs[None]
  parts = [jnp.cos(angles), jnp.sin(angles)] if flip_sin_to_cos else [jnp.sin(angles), jnp.cos(angles)]
  return jnp.pad(jnp.concatenate(parts, axis=-1), ((0, 0), (0, dim % 2)))


class TimestepEmbedding(nn.Module):
  """diffusers' TimestepEmbedding: [B, in] (+ cond_proj(condition)) -> linear_1 -> SiLU -> linear_2 -> [B, features].
  `cond_dim` adds `cond_proj` (no bias), LCM's guidance embedding; a missing condition adds nothing."""
  features: int
  cond_dim: int | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, sample, condition=None):
    if self.cond_dim:
      if condition is None:  # cond_proj has no bias: a zero condition adds exactly nothing, and keeps its weight.
        condition = jnp.zeros(sample.shape[:1] + (self.cond_dim,), sample.dtype)
      sample = sample + _linear(sample.shape[-1], 'cond_proj', self.dtype, use_bias=False)(condition)
    h = nn.silu(_linear(self.features, 'linear_1', self.dtype)(sample))
    return _linear(self.features, 'linear_2', self.dtype)(h)


class ResnetBlock(nn.Module):
  """diffusers' ResnetBlock2D: norm-SiLU-conv, + time_emb_proj(SiLU(temb)), norm-SiLU-conv, a 1x1 shortcut when the
  widths differ. x [B, H, W, C], temb [B, T] -> [B, H, W, out_channels]."""
  out_channels: int
  groups: int
  eps: float
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, temb):
    h = nn.silu(_group_norm(self.groups, self.eps, 'norm1', self.dtype)(x))
    h = _conv(self.out_channels, 3, 'conv1', self.dtype)(h)
    h = h + _linear(self.out_channels, 'time_emb_proj', self.dtype)(nn.silu(temb))[:, None, None, :]
    h = nn.silu(_group_norm(self.groups, self.eps, 'norm2', self.dtype)(h))
    h = _conv(self.out_channels, 3, 'conv2', self.dtype)(h)
    if x.shape[-1] != self.out_channels:
      x = _conv(self.out_channels, 1, 'conv_shortcut', self.dtype)(x)
    return x.astype(self.dtype) + h


class Attention(nn.Module):
  """diffusers' Attention: q from x [B, N, C], k and v from context [B, L, D] (x itself for self-attention), no
  biases, `heads` heads of C / heads channels, an output projection (`to_out.0`) with bias."""
  heads: int
  impl: str = 'xla'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, context=None):
    context = x if context is None else context
    batch, tokens, width = x.shape
    split = lambda h: h.reshape(batch, h.shape[1], self.heads, width // self.heads)
    q = split(_linear(width, 'to_q', self.dtype, use_bias=False)(x))
    k = split(_linear(width, 'to_k', self.dtype, use_bias=False)(context))
    v = split(_linear(width, 'to_v', self.dtype, use_bias=False)(context))
    out = attention_lib.attention(q, k, v, impl=self.impl).reshape(batch, tokens, width)
    return _linear(width, 'to_out_0', self.dtype)(out)


class GEGLU(nn.Module):
  """diffusers' GEGLU: proj to 2 * features, the first half times the exact GELU of the second."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    hidden, gate = jnp.split(_linear(2 * self.features, 'proj', self.dtype)(x), 2, axis=-1)
    return hidden * nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
  """diffusers' FeedForward (geglu): net.0 = GEGLU to 4 x width, net.2 = the linear map back to width."""
  width: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = GEGLU(4 * self.width, self.dtype, name='net_0')(x)
    return _linear(self.width, 'net_2', self.dtype)(h)


class TransformerBlock(nn.Module):
  """diffusers' BasicTransformerBlock (layer_norm, geglu): x + attn1(norm1 x), + attn2(norm2 x, context),
  + ff(norm3 x). x [B, N, C], context [B, L, D] -> [B, N, C]."""
  heads: int
  impl: str = 'xla'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, context):
    norm = lambda name: TorchLayerNorm(dtype=self.dtype, name=name)
    x = x + Attention(self.heads, self.impl, self.dtype, name='attn1')(norm('norm1')(x))
    x = x + Attention(self.heads, self.impl, self.dtype, name='attn2')(norm('norm2')(x), context)
    return x + FeedForward(x.shape[-1], self.dtype, name='ff')(norm('norm3')(x))


class Transformer2D(nn.Module):
  """diffusers' Transformer2DModel on a feature map: group norm (eps 1e-6), proj_in (a 1x1 conv, or a linear map on
  the tokens with `linear_projection`), `depth` transformer blocks on the H * W tokens in row-major order (torch's
  permute(0, 2, 3, 1).reshape), proj_out, residual. x [B, H, W, C], context [B, L, D] -> [B, H, W, C]."""
  heads: int
  depth: int
  groups: int
  linear_projection: bool
  impl: str = 'xla'
  dtype: Dtype = jnp.float32
  remat: str = 'none'  # What the backward pass keeps of each transformer block (fewstep_jax.nn.remat).

  @nn.compact
  def __call__(self, x, context):
    batch, height, width, channels = x.shape
    h = _group_norm(self.groups, 1e-6, 'norm', self.dtype)(x)
    if self.linear_projection:
      h = _linear(channels, 'proj_in', self.dtype)(h.reshape(batch, height * width, channels))
    else:
      h = _conv(channels, 1, 'proj_in', self.dtype)(h).reshape(batch, height * width, channels)
    block = remat_block(TransformerBlock, self.remat)
    for k in range(self.depth):
      h = block(self.heads, self.impl, self.dtype, name=f'transformer_blocks_{k}')(h, context)
    if self.linear_projection:
      h = _linear(channels, 'proj_out', self.dtype)(h).reshape(x.shape)
    else:
      h = _conv(channels, 1, 'proj_out', self.dtype)(h.reshape(x.shape))
    return h + x.astype(self.dtype)


class _StridedConv(nn.Module):
  """Downsample2D's `conv`: 3x3, stride 2, padding 1 (diffusers' downsample_padding=1)."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    init = lambda scale: edm_unets.weight_init('kaiming_uniform', channels * 9, channels * 9, scale)
    w = self.param('weight', init(math.sqrt(1 / 3)), (channels, channels, 3, 3))
    b = self.param('bias', init(math.sqrt(1 / 3)), (channels,))
    x = lax.conv_general_dilated(x.astype(self.dtype), w.astype(self.dtype), (2, 2), [(1, 1), (1, 1)],
                                 dimension_numbers=('NHWC', 'OIHW', 'NHWC'))
    return x + b.astype(self.dtype)


class _Resample(nn.Module):
  """The `downsamplers.0` / `upsamplers.0` entry: its `conv`, after a nearest-neighbour 2x upsampling when `up`."""
  up: bool
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    if not self.up:
      return _StridedConv(self.dtype, name='conv')(x)
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # F.interpolate(scale_factor=2, mode='nearest').
    return _conv(x.shape[-1], 3, 'conv', self.dtype)(x)


class Level(nn.Module):
  """A down or up block: `layers` ResnetBlocks, each followed by a Transformer2D when `heads` (CrossAttnDownBlock2D,
  CrossAttnUpBlock2D; none in DownBlock2D, UpBlock2D), then a 2x resampling when `resample` is 'down' or 'up'.
  An up block first concatenates each resnet's input with the last of `skips`, consuming them from the end.
  Returns (h, the down block's outputs that the up blocks take as skips)."""
  out_channels: int
  layers: int
  heads: int  # 0: no attention.
  depth: int
  groups: int
  eps: float
  linear_projection: bool
  resample: str  # 'down', 'up' or ''.
  impl: str = 'xla'
  dtype: Dtype = jnp.float32
  remat: str = 'none'  # What the backward pass keeps of each resnet and transformer block (fewstep_jax.nn.remat).

  @nn.compact
  def __call__(self, x, temb, context, skips=()):
    skips, outputs = list(skips), []
    resnet = remat_block(ResnetBlock, self.remat)
    for i in range(self.layers):
      if skips:
        x = jnp.concatenate([x, skips.pop().astype(x.dtype)], axis=-1)
      x = resnet(self.out_channels, self.groups, self.eps, self.dtype, name=f'resnets_{i}')(x, temb)
      if self.heads:
        x = Transformer2D(self.heads, self.depth, self.groups, self.linear_projection, self.impl, self.dtype,
                          self.remat, name=f'attentions_{i}')(x, context)
      outputs.append(x)
    if self.resample:
      x = _Resample(self.resample == 'up', self.dtype, name=f'{self.resample}samplers_0')(x)
      outputs.append(x)
    return x, outputs


class MidBlock(nn.Module):
  """UNetMidBlock2DCrossAttn: ResnetBlock, Transformer2D, ResnetBlock."""
  heads: int
  depth: int
  groups: int
  eps: float
  linear_projection: bool
  impl: str = 'xla'
  dtype: Dtype = jnp.float32
  remat: str = 'none'

  @nn.compact
  def __call__(self, x, temb, context):
    channels = x.shape[-1]
    resnet = remat_block(ResnetBlock, self.remat)
    x = resnet(channels, self.groups, self.eps, self.dtype, name='resnets_0')(x, temb)
    x = Transformer2D(self.heads, self.depth, self.groups, self.linear_projection, self.impl, self.dtype,
                      self.remat, name='attentions_0')(x, context)
    return resnet(channels, self.groups, self.eps, self.dtype, name='resnets_1')(x, temb)


def _per_level(value, levels: int, name: str) -> tuple:
  if isinstance(value, int):
    return (value,) * levels
  value = tuple(value)
  if len(value) != levels or not all(isinstance(v, int) for v in value):
    raise errors.ConfigError(f'{name}={value} needs one integer per level ({levels} levels, as block_out_channels)')
  return value


class SDUNet(nn.Module):
  """diffusers' UNet2DConditionModel; the fields are its config keys, at its defaults (see the module docstring).

  __call__(x [B, H, W, in_channels], timesteps [B] or scalar, encoder_hidden_states [B, L, cross_attention_dim],
  added_cond=None or {'text_embeds': [B, P], 'time_ids': [B, N]}, timestep_cond=None or [B, time_cond_proj_dim])
  -> [B, H, W, out_channels] float32.
  """
  in_channels: int = 4
  out_channels: int = 4
  block_out_channels: Sequence[int] = (320, 640, 1280, 1280)
  down_block_types: Sequence[str] = _SD_DOWN
  up_block_types: Sequence[str] = _SD_UP
  layers_per_block: int | Sequence[int] = 2
  transformer_layers_per_block: int | Sequence[int] = 1
  attention_head_dim: int | Sequence[int] = 8  # diffusers' name for the number of heads per level.
  cross_attention_dim: int = 1280
  use_linear_projection: bool = False
  norm_num_groups: int = 32
  norm_eps: float = 1e-5
  flip_sin_to_cos: bool = True
  freq_shift: int = 0
  addition_embed_type: str | None = None
  addition_time_embed_dim: int | None = None
  projection_class_embeddings_input_dim: int | None = None
  time_cond_proj_dim: int | None = None
  attention: str = 'xla'
  remat: str = 'none'  # What the backward pass keeps of each resnet and transformer block (fewstep_jax.nn.remat).
  dtype: Dtype = jnp.float32

  def levels(self) -> dict:
    """The per-level values (tuples over block_out_channels), after checking the config."""
    channels = tuple(self.block_out_channels)
    n = len(channels)
    for name, types, known in (('down_block_types', self.down_block_types, _DOWN_TYPES),
                               ('up_block_types', self.up_block_types, _UP_TYPES)):
      if len(types) != n or any(t not in known for t in types):
        raise errors.ConfigError(f'{name}={tuple(types)} needs one of {sorted(known)} per level ({n} levels)')
    heads = _per_level(self.attention_head_dim, n, 'attention_head_dim')
    for width, count in zip(channels, heads):
      if width % count or width % self.norm_num_groups:
        raise errors.ConfigError(f'a level of {width} channels needs a multiple of attention_head_dim ({count} '
                                 f'heads) and of norm_num_groups ({self.norm_num_groups})')
    if self.addition_embed_type not in (None, 'text_time'):
      raise errors.ConfigError(f'addition_embed_type={self.addition_embed_type!r} is not implemented; this port reads '
                               "None or 'text_time' (SDXL)")
    if self.addition_embed_type and not (self.addition_time_embed_dim and self.projection_class_embeddings_input_dim):
      raise errors.ConfigError("addition_embed_type='text_time' needs addition_time_embed_dim and "
                               'projection_class_embeddings_input_dim')
    return dict(channels=channels, heads=heads, layers=_per_level(self.layers_per_block, n, 'layers_per_block'),
                depth=_per_level(self.transformer_layers_per_block, n, 'transformer_layers_per_block'),
                down_attention=tuple(_DOWN_TYPES[t] for t in self.down_block_types),
                up_attention=tuple(_UP_TYPES[t] for t in self.up_block_types))

  @nn.compact
  def __call__(self, x, timesteps, encoder_hidden_states, added_cond=None, timestep_cond=None):
    level = self.levels()
    channels, n = level['channels'], len(level['channels'])
    batch, height, width, in_channels = x.shape
    if height % 2 ** (n - 1) or width % 2 ** (n - 1) or in_channels != self.in_channels:
      raise ValueError(f'latents of shape {tuple(x.shape)}: this U-Net takes [B, H, W, {self.in_channels}] with H '
                       f'and W multiples of {2 ** (n - 1)}')
    t = jnp.broadcast_to(jnp.asarray(timesteps, jnp.float32), (batch,))
    t_features = sinusoidal_features(t, channels[0], self.flip_sin_to_cos, self.freq_shift).astype(self.dtype)
    if timestep_cond is not None and not self.time_cond_proj_dim:
      raise ValueError('timestep_cond was passed, but this U-Net has no time_cond_proj_dim')
    cond = None if timestep_cond is None else jnp.asarray(timestep_cond).astype(self.dtype)
    temb = TimestepEmbedding(4 * channels[0], self.time_cond_proj_dim, self.dtype, name='time_embedding')(
        t_features, cond)
    temb = temb + self._added_embedding(added_cond, batch, 4 * channels[0])
    context = jnp.asarray(encoder_hidden_states).astype(self.dtype)

    common = dict(groups=self.norm_num_groups, eps=self.norm_eps, linear_projection=self.use_linear_projection,
                  impl=self.attention, dtype=self.dtype, remat=self.remat)
    h = _conv(channels[0], 3, 'conv_in', self.dtype)(x)
    skips = [h]
    for i in range(n):
      h, outputs = Level(channels[i], level['layers'][i], level['heads'][i] if level['down_attention'][i] else 0,
                         level['depth'][i], resample='down' if i < n - 1 else '', name=f'down_blocks_{i}',
                         **common)(h, temb, context)
      skips += outputs
    h = MidBlock(level['heads'][-1], level['depth'][-1], name='mid_block', **common)(h, temb, context)
    self.sow('intermediates', 'bottleneck', h)  # The project's networks' features (nn.make_features).
    for i in range(n):
      j = n - 1 - i  # The level this up block mirrors.
      taken = level['layers'][j] + 1
      h, _ = Level(channels[j], taken, level['heads'][j] if level['up_attention'][i] else 0, level['depth'][j],
                   resample='up' if i < n - 1 else '', name=f'up_blocks_{i}', **common)(
                       h, temb, context, skips[-taken:])
      skips = skips[:-taken]
    h = nn.silu(_group_norm(self.norm_num_groups, self.norm_eps, 'conv_norm_out', self.dtype)(h))
    return _conv(self.out_channels, 3, 'conv_out', self.dtype)(h).astype(jnp.float32)

  def _added_embedding(self, added_cond, batch: int, features: int):
    """SDXL's text_time embedding: add_embedding([text_embeds, sinusoid(each time id)]), or 0 without one."""
    if not self.addition_embed_type:
      if added_cond is not None:
        raise ValueError('added_cond was passed, but this U-Net has no addition_embed_type (SDXL\'s is text_time)')
      return 0.0
    if not isinstance(added_cond, dict) or not {'text_embeds', 'time_ids'} <= set(added_cond):
      raise ValueError("this U-Net (addition_embed_type='text_time', SDXL) needs added_cond={'text_embeds': [B, P], "
                       f"'time_ids': [B, {SDXL_TIME_IDS}]}}")
    text, time_ids = jnp.asarray(added_cond['text_embeds']), jnp.asarray(added_cond['time_ids'])
    time_features = sinusoidal_features(time_ids.reshape(-1), self.addition_time_embed_dim, self.flip_sin_to_cos,
                                        self.freq_shift).reshape(batch, -1)
    combined = jnp.concatenate([text.astype(jnp.float32), time_features], axis=-1)
    if combined.shape[-1] != self.projection_class_embeddings_input_dim:
      raise ValueError(f'text_embeds {tuple(text.shape)} and time_ids {tuple(time_ids.shape)} make '
                       f'{combined.shape[-1]} features; this U-Net takes projection_class_embeddings_input_dim='
                       f'{self.projection_class_embeddings_input_dim} = the pooled text width + time ids * '
                       f'{self.addition_time_embed_dim}')
    return TimestepEmbedding(features, dtype=self.dtype, name='add_embedding')(combined.astype(self.dtype))


class SDUNetNetwork(nn.Module):
  """The registry's network 'sd_unet' (`network.name = 'sd_unet'`, `network.preset = 'sdxl_base'`): the SDUNet of
  a preset under the project's call, apply(x, t, r=None, y=None, train=False), with its parameters at the top level
  in diffusers' layout (those of `load`).

  x [B, H, W, C] latents (C = 4 for the published presets); t [B] the raw network's time input, times `time_scale`
  (SD's DDPM timesteps in [0, 1000) under the readouts 'sd' and 'sd_v', with time_scale 1); y the text condition in
  the project's names (fewstep_jax/conditions.py): {'tokens': [B, L, cross_attention_dim]} plus, for SDXL, 'pooled'
  [B, 1280] and 'time_ids' [B, 6]. Class labels cannot be this condition: a label count (num_classes) is refused,
  and y=None outside initialisation. `cross_attention_dim` (> 0) replaces the preset's, for a small text encoder.
  `remat`: what the backward pass keeps of each resnet and transformer block (fewstep_jax.nn.remat).
  `two_times` (flow maps: r [B]) feeds r's sinusoidal features through the time embedding's `cond_proj`, the input
  LCM's guidance embedding uses, so that a U-Net of the published layout gains one bias-free linear map.
  `guidance_embedding` (> 0, LCM's time_cond_proj_dim: 256 in its SD 1.5 U-Nets) feeds that input LCM's guidance
  embedding instead (`guidance_scale_embedding`) of y['guidance'] [B], LCM's w (a pipeline's guidance_scale - 1):
  the network that LCM trains and its published checkpoints hold.
  -> the prediction [B, H, W, C] float32 (epsilon for sd15 and sdxl_base, v for sd21_v).
  """
  preset: str = 'sd15'
  cross_attention_dim: int = 0
  time_scale: float = 1.0
  two_times: bool = False
  guidance_embedding: int = 0
  attention: str = 'xla'
  remat: str = 'none'
  num_classes: int = 0
  dtype: Dtype = jnp.float32

  def setup(self):
    if self.num_classes:
      raise errors.ConfigError(f'sd_unet is conditioned on text, not on labels: the data gives {self.num_classes} '
                               'classes; use a text-captioned data set (data.name=digits_text, or latents with '
                               'text conditions)')
    fields = {'cross_attention_dim': self.cross_attention_dim} if self.cross_attention_dim else {}
    if self.two_times and self.guidance_embedding:
      raise errors.ConfigError('sd_unet has one cond_proj input: network.two_times and network.guidance_embedding '
                               'cannot both be set')
    if self.two_times:
      fields['time_cond_proj_dim'] = PRESETS[self.preset]['block_out_channels'][0]
    if self.guidance_embedding:
      fields['time_cond_proj_dim'] = self.guidance_embedding
    self.unet = from_config(self.preset, attention=self.attention, remat=self.remat, dtype=self.dtype, **fields)
    nn.share_scope(self, self.unet)  # Diffusers' names at the top level, as `load` returns them.

  def __call__(self, x, t, r=None, y=None, train: bool = False):
    del train  # No dropout.
    if (r is not None) != self.two_times:
      raise ValueError('sd_unet takes a second time r exactly when network.two_times is set')
    expected = (f"y={{'tokens': [B, L, {self.unet.cross_attention_dim}]"
                + (", 'pooled', 'time_ids'}" if self.unet.addition_embed_type else '}'))
    if y is None:
      if not self.is_initializing():
        raise ValueError(f'sd_unet needs its text condition: {expected}')
      _, _, tokens, added, _ = example_inputs(self.unet, x.shape[0])
      y = {'tokens': tokens, **({} if added is None else {'pooled': added['text_embeds'],
                                                          'time_ids': added['time_ids']})}
      if self.guidance_embedding:
        y['guidance'] = jnp.zeros((x.shape[0],))
    if not isinstance(y, dict) or 'tokens' not in y:
      raise ValueError(f"sd_unet's y is its text condition, {expected}, not {type(y).__name__}")
    added = None
    if self.unet.addition_embed_type:
      added = {'text_embeds': y['pooled'], 'time_ids': y['time_ids']}
    second = None
    if self.two_times:
      second = sinusoidal_features(jnp.broadcast_to(r, t.shape) * self.time_scale, self.unet.time_cond_proj_dim,
                                   self.unet.flip_sin_to_cos, self.unet.freq_shift)
    if self.guidance_embedding:
      if 'guidance' not in y:
        raise ValueError("sd_unet with network.guidance_embedding needs y['guidance'] [B], LCM's w (guidance scale "
                         '- 1), beside the text condition')
      second = guidance_scale_embedding(jnp.broadcast_to(y['guidance'], t.shape), self.guidance_embedding)
    return self.unet(x, t * self.time_scale, y['tokens'], added, second)


# SDUNet's fields that are no diffusers config key: Flax's, and how the network runs (no parameter depends on them).
_NOT_CONFIG_KEYS = frozenset({'parent', 'name', 'attention', 'remat', 'dtype'})


def from_config(config: str | dict, *, source: str = 'config', **fields) -> SDUNet:
  """The SDUNet of a diffusers UNet2DConditionModel config: a name in PRESETS or a dict of config.json's values.
  `fields` sets the module's own (attention, dtype). A key this port does not know, or reads only at another value
  (_FIXED), is a ConfigError naming it."""
  if isinstance(config, str):
    if config not in PRESETS:
      raise errors.ConfigError(f'unknown SD U-Net preset {config!r}; known: {", ".join(PRESETS)}')
    source, config = f'preset {config!r}', PRESETS[config]
  known = set(SDUNet.__dataclass_fields__) - _NOT_CONFIG_KEYS
  read = {}
  for key, value in config.items():
    value = tuple(value) if isinstance(value, list) else value
    if key in _IGNORED:
      continue
    if key in _FIXED:
      allowed = _FIXED[key] if isinstance(_FIXED[key], tuple) else (_FIXED[key],)
      if value not in allowed:
        raise errors.ConfigError(f'{source}: {key}={value!r} is not implemented by this port of '
                                 f'UNet2DConditionModel (it reads {" or ".join(map(repr, allowed))})')
    elif key in known:
      read[key] = value
    else:
      raise errors.ConfigError(f'{source}: {key!r} is not a UNet2DConditionModel config key this port knows')
  unet = SDUNet(**{**read, **fields})  # fields (attention, dtype, a width) override the config's
  unet.levels()  # A config that cannot build is an error here, not at the first call.
  return unet


def network_fields(unet: SDUNet) -> dict:
  """The config values `unet` is built from, as from_config reads them (diffusers' defaults filled in, lists as
  tuples), in the order of SDUNet's fields; attention, remat and dtype, which change no parameter, left out."""
  return {name: getattr(unet, name) for name in SDUNet.__dataclass_fields__ if name not in _NOT_CONFIG_KEYS}


def matching_preset(config: dict, source: str = 'config') -> tuple[str, int]:
  """(preset, cross_attention_dim) of a diffusers config: the preset of PRESETS whose network the config builds,
  compared as from_config reads both, and the config's cross-attention width where it is not the preset's (else 0),
  which network.cross_attention_dim sets. LCM's time_cond_proj_dim is network.guidance_embedding's, not compared. A config that is no preset is a ConfigError naming the first key in which
  it differs from the closest preset."""
  own = network_fields(from_config(config, source=source))
  differing = {}
  for name in PRESETS:
    preset = network_fields(from_config(name))
    differing[name] = [key for key in own if key not in ('cross_attention_dim', 'time_cond_proj_dim')
                       and own[key] != preset[key]]
    if not differing[name]:
      width = own['cross_attention_dim']
      return name, 0 if width == preset['cross_attention_dim'] else width
  closest = min(PRESETS, key=lambda name: len(differing[name]))
  key = differing[closest][0]
  raise errors.ConfigError(
      f'{source} is the config of none of the SD U-Net presets ({", ".join(PRESETS)}): it differs from the closest, '
      f'{closest!r}, first in {key} ({own[key]!r} there, {network_fields(from_config(closest))[key]!r} in the preset)'
      f'{" and %d more keys" % (len(differing[closest]) - 1) if len(differing[closest]) > 1 else ""}; the network '
      "'sd_unet' builds presets: add this config to PRESETS in fewstep_jax/nn/sd_unet.py to import it")


def example_inputs(unet: SDUNet, batch: int = 1) -> tuple:
  """Zero inputs of the smallest size `unet` takes: (x, timesteps, encoder_hidden_states, added_cond,
  timestep_cond), for initialisation and shapes."""
  size = 2 ** (len(unet.block_out_channels) - 1)
  added = None
  if unet.addition_embed_type:
    text_width = unet.projection_class_embeddings_input_dim - SDXL_TIME_IDS * unet.addition_time_embed_dim
    added = {'text_embeds': jnp.zeros((batch, text_width)), 'time_ids': jnp.zeros((batch, SDXL_TIME_IDS))}
  cond = jnp.zeros((batch, unet.time_cond_proj_dim)) if unet.time_cond_proj_dim else None
  return (jnp.zeros((batch, size, size, unet.in_channels)), jnp.zeros((batch,)),
          jnp.zeros((batch, 1, unet.cross_attention_dim)), added, cond)


def init_params(unet: SDUNet, key: jax.Array):
  return jax.jit(lambda key: unet.init(key, *example_inputs(unet))['params'])(key)


def abstract_params(unet: SDUNet):
  """The parameter pytree as ShapeDtypeStructs (jax.eval_shape: nothing is allocated)."""
  return jax.eval_shape(lambda: unet.init(jax.random.key(0), *example_inputs(unet))['params'])


def parameter_count(unet: SDUNet) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(abstract_params(unet)))


def torch_name(path: Sequence[str]) -> str:
  """The diffusers state-dict key of a flax path: 'down_blocks_1' is ModuleList entry down_blocks.1, 'to_out_0'
  entry to_out.0; time_embedding's 'linear_1' stays as it is (an attribute, not a list entry)."""
  return '.'.join(_LIST_ENTRY.sub(r'\1.\2', part) for part in path)


def weight_shapes(unet: SDUNet) -> dict:
  """{diffusers state-dict key: shape} of `unet`."""
  from flax import traverse_util
  flat = traverse_util.flatten_dict(abstract_params(unet))
  return {torch_name(path): tuple(leaf.shape) for path, leaf in flat.items()}


def random_weights(unet: SDUNet, seed: int = 0) -> dict:
  """A diffusers state dict of `unet`'s shapes with a non-degenerate forward pass (tests and parity checks): weights
  N(0, 1 / fan_in), norm scales 1 + N(0, 0.1^2), biases N(0, 0.1^2), drawn in the order of the sorted names."""
  rng = np.random.default_rng(seed)
  state_dict = {}
  for name, shape in sorted(weight_shapes(unet).items()):
    if '.norm' in name and name.endswith('.weight'):
      value = 1.0 + 0.1 * rng.standard_normal(shape)
    elif name.endswith('.weight'):
      value = rng.standard_normal(shape) / math.sqrt(math.prod(shape[1:]))
    else:
      value = 0.1 * rng.standard_normal(shape)
    state_dict[name] = value.astype(np.float32)
  return state_dict


def from_state_dict(state_dict: dict, unet: SDUNet, source: str = 'state dict') -> dict:
  """The SDUNet parameter pytree (float32 numpy) from a diffusers UNet2DConditionModel state dict, name by name and
  shape by shape; weights missing, unexpected or misshapen are all named in one ConfigError."""
  from flax import traverse_util
  flat = traverse_util.flatten_dict(abstract_params(unet))
  by_name = {torch_name(path): (path, tuple(leaf.shape)) for path, leaf in flat.items()}
  missing, unexpected = sorted(set(by_name) - set(state_dict)), sorted(set(state_dict) - set(by_name))
  misshapen = sorted((name, tuple(np.shape(state_dict[name])), shape) for name, (_, shape) in by_name.items()
                     if name in state_dict and tuple(np.shape(state_dict[name])) != shape)
  problems = [f'{what} {names[:6]}{" and %d more" % (len(names) - 6) if len(names) > 6 else ""}'
              for what, names in (('missing', missing), ('unexpected', unexpected),
                                  ('wrong shapes (name, file, network)', misshapen)) if names]
  if problems:
    raise errors.ConfigError(f'{source} does not hold the weights of this U-Net ({"; ".join(problems)}): check that '
                             'the config (config.json or the preset) is the one of these weights')
  return traverse_util.unflatten_dict({path: np.asarray(state_dict[name], np.float32)
                                       for name, (path, _) in by_name.items()})


def to_state_dict(params) -> dict:
  from flax import traverse_util
  return {torch_name(path): np.asarray(value) for path, value in traverse_util.flatten_dict(params).items()}


def find_files(path: str) -> tuple[str, str | None]:
  """(weights file, config.json or None) of a weights file, a diffusers `unet` folder or a pipeline folder holding
  one: the first of WEIGHT_FILES there (a sharded one by its .index.json)."""
  if not os.path.exists(path):
    raise errors.InputNotFoundError(f'SD U-Net weights {path!r} not found; nothing is downloaded at run time: pass '
                                    'a downloaded pipeline folder, its unet/ folder or a weights file')
  if os.path.isfile(path):
    config = os.path.join(os.path.dirname(path), 'config.json')
    return path, config if os.path.isfile(config) else None
  candidates = [name + suffix for name in WEIGHT_FILES for suffix in ('', '.index.json')]
  for folder in (path, os.path.join(path, 'unet')):
    for name in candidates:
      if os.path.isfile(os.path.join(folder, name)):
        config = os.path.join(folder, 'config.json')
        return os.path.join(folder, name), config if os.path.isfile(config) else None
  raise errors.InputNotFoundError(f'{path} holds no U-Net weights: none of {", ".join(WEIGHT_FILES)} there or in '
                                  'its unet/ folder; pass a downloaded diffusers pipeline folder (with unet/) or its '
                                  'unet/ folder')


def read_state_dict(path: str) -> dict:
  """{name: array} of one weights file (weight_files.read_state_dict), or of the shards a .index.json names."""
  if not path.endswith('.index.json'):
    return weights.read_state_dict(path)
  index = read_json(path)
  shards = sorted(set(index.get('weight_map', {}).values()))
  if not shards:
    raise errors.UnreadableWeightsError(f'{path} names no shards (no weight_map): it is not a sharded-weights index')
  state_dict = {}
  for shard in shards:
    state_dict.update(weights.read_state_dict(os.path.join(os.path.dirname(path), shard)))
  return state_dict


def read_json(path: str) -> dict:
  """A JSON object from a file; an unreadable file is one UnreadableWeightsError naming it."""
  try:
    with open(path) as file:
      loaded = json.load(file)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
    raise errors.UnreadableWeightsError(f'{path} cannot be read as JSON ({error})') from None
  if not isinstance(loaded, dict):
    raise errors.UnreadableWeightsError(f'{path} holds a JSON {type(loaded).__name__}, not an object')
  return loaded


def read_config(path: str) -> dict:
  """A diffusers config.json, checked to be a UNet2DConditionModel's."""
  config = read_json(path)
  if config.get('_class_name', 'UNet2DConditionModel') != 'UNet2DConditionModel':
    raise errors.ConfigError(f"{path} is the config of {config['_class_name']}, not of UNet2DConditionModel: "
                             "pass the pipeline's unet/ folder")
  return config


def load(path: str, config: str | dict | SDUNet | None = None, **fields) -> tuple[SDUNet, dict]:
  """(module, params) from published weights: a pipeline folder, its unet/ folder or a weights file (WEIGHT_FILES,
  an .npz, or a sharded .index.json). The network is `config` (a preset name, a config dict or an SDUNet), else the
  config.json beside the weights. `fields` sets the module's attention and dtype. Nothing in the files is run."""
  weights_path, config_path = find_files(path)
  if config is None:
    if config_path is None:
      raise errors.ConfigError(f'{weights_path} has no config.json beside it: pass config=, a preset '
                               f'({", ".join(PRESETS)}) or the U-Net\'s config dict')
    unet = from_config(read_config(config_path), source=config_path, **fields)
  elif isinstance(config, SDUNet):
    unet = config.clone(**fields) if fields else config
  else:
    unet = from_config(config, **fields)
  return unet, from_state_dict(read_state_dict(weights_path), unet, source=weights_path)

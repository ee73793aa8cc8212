"""The Stable Diffusion VAE (`sd-vae-ft-mse` / `sd-vae-ft-ema`, the latent space of DiT, SiT and MeanFlow at
ImageNet-256) in flax, with diffusers' `AutoencoderKL` parameter layout.

Followed: diffusers' `models/autoencoders/vae.py` (`Encoder`, `Decoder`), `models/unets/unet_2d_blocks.py`
(`DownEncoderBlock2D`, `UpDecoderBlock2D`, `UNetMidBlock2D`), `models/resnet.py` (`ResnetBlock2D`),
`models/downsampling.py` / `upsampling.py` (`Downsample2D` with its (0, 1, 0, 1) padding, `Upsample2D` nearest) and
`models/attention_processor.py` (`Attention` with group norm, one head), with `AutoencoderKL`'s quant convolutions
and `DiagonalGaussianDistribution` (log-variance clamped to [-30, 20]). Defaults are the SD VAE's config.
Parameters keep PyTorch's names and layouts (`encoder.down_blocks.0.resnets.1.conv1.weight` is the flax path
`('encoder', 'down_blocks_0', 'resnets_1', 'conv1', 'weight')`); the attention's deprecated names (query, key,
value, proj_attn), which the published files use, are read as diffusers reads them. Activations are NHWC.

  vae, params = sd_vae.load('stable-diffusion-xl-base-1.0/vae')   # or the pipeline folder, or a weights file
  mean, std = vae.apply({'params': params}, images, method=vae.encode)    # images in [-1, 1], [B, 256, 256, 3]
  images = vae.apply({'params': params}, latents, method=vae.decode)      # latents unscaled, [B, 32, 32, 4]

The training latents are `SCALING_FACTOR * (mean + std * eps)`, MeanFlow's and DiT's scaling. A diffusers `vae/`
folder (or a pipeline folder holding one) gives its own: `scaling_factor` of its config.json (SDXL's VAE 0.13025; SD
1.5's config.json has none: diffusers' default 0.18215), read by `latent_scaling`. From a folder the module is built
from the config.json (widths, blocks, groups) and the weights are the first of `WEIGHT_FILES` there: the float32
file, the fp16 variant, or the .bin files. SDXL's VAE and the community `sdxl-vae-fp16-fix` folder (other weights,
the same architecture and layout) load alike; single-file checkpoints in the original LDM names
(`sdxl_vae.safetensors`) are not read.
"""
import os
from typing import Sequence

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from fewstep_jax import errors
from fewstep_jax import weight_files as weights
from fewstep_jax.nn import attention as attention_lib
from fewstep_jax.nn import edm_unets, sd_unet, sit

SCALING_FACTOR = 0.18215  # diffusers' AutoencoderKL default, SD 1.x's and 2.x's.
# The published file names in a vae/ folder, in the order they are looked for (diffusers' variant='fp16' second).
WEIGHT_FILES = ('diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.fp16.safetensors',
                'diffusion_pytorch_model.bin', 'diffusion_pytorch_model.fp16.bin')
# config.json keys that give the module's fields (diffusers' AutoencoderKL names are SDVAE's).
CONFIG_FIELDS = ('block_out_channels', 'layers_per_block', 'latent_channels', 'norm_num_groups', 'out_channels')
# diffusers' deprecated attention names -> the current ones (its _convert_deprecated_attention_blocks).
_DEPRECATED = {'query': 'to_q', 'key': 'to_k', 'value': 'to_v', 'proj_attn': 'to_out.0'}


def _conv(out, kernel, name, **kwargs):
  return edm_unets.Conv2d(out, kernel, init_mode='kaiming_uniform', init_weight=1.0, name=name, **kwargs)


def _norm(groups, name):
  return edm_unets.GroupNorm(num_groups=groups, min_channels_per_group=1, eps=1e-6, name=name)


class ResnetBlock(nn.Module):
  """diffusers' ResnetBlock2D without a time embedding: norm-SiLU-conv twice, a 1x1 shortcut when widths differ."""
  out_channels: int
  groups: int

  @nn.compact
  def __call__(self, x):
    h = _conv(self.out_channels, 3, 'conv1')(nn.silu(_norm(self.groups, 'norm1')(x)))
    h = _conv(self.out_channels, 3, 'conv2')(nn.silu(_norm(self.groups, 'norm2')(h)))
    if x.shape[-1] != self.out_channels:
      x = _conv(self.out_channels, 1, 'conv_shortcut')(x)
    return x + h


class AttentionBlock(nn.Module):
  """diffusers' Attention as the VAE's middle block uses it: group norm, one head over all pixels, residual."""
  groups: int

  @nn.compact
  def __call__(self, x):
    batch, height, width, channels = x.shape
    h = _norm(self.groups, 'group_norm')(x).reshape(batch, height * width, 1, channels)
    linear = lambda name: edm_unets.Linear(channels, init_mode='kaiming_uniform', name=name)
    out = attention_lib.attention(linear('to_q')(h), linear('to_k')(h), linear('to_v')(h))
    return x + linear('to_out_0')(out).reshape(x.shape)


class MidBlock(nn.Module):
  groups: int

  @nn.compact
  def __call__(self, x):
    x = ResnetBlock(x.shape[-1], self.groups, name='resnets_0')(x)
    x = AttentionBlock(self.groups, name='attentions_0')(x)
    return ResnetBlock(x.shape[-1], self.groups, name='resnets_1')(x)


class _Downsample(nn.Module):
  """diffusers' Downsample2D(padding=0): pad one row and column at the bottom and right, 3x3 conv of stride 2."""

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    w = self.param('weight', nn.initializers.lecun_normal(in_axis=1, out_axis=0), (channels, channels, 3, 3))
    b = self.param('bias', nn.initializers.zeros, (channels,))
    x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    return lax.conv_general_dilated(x, w.astype(x.dtype), (2, 2), 'VALID',
                                    dimension_numbers=('NHWC', 'OIHW', 'NHWC')) + b.astype(x.dtype)


class _Sampler(nn.Module):
  """The 'downsamplers' / 'upsamplers' entry: its `conv`."""
  up: bool

  @nn.compact
  def __call__(self, x):
    if not self.up:
      return _Downsample(name='conv')(x)
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # Nearest-neighbour, as F.interpolate(mode='nearest').
    return _conv(x.shape[-1], 3, 'conv')(x)


class _Level(nn.Module):
  """DownEncoderBlock2D / UpDecoderBlock2D: `layers` ResnetBlocks, then a 2x resampling unless it is the last."""
  out_channels: int
  layers: int
  groups: int
  resample: str  # 'down', 'up' or ''.

  @nn.compact
  def __call__(self, x):
    for i in range(self.layers):
      x = ResnetBlock(self.out_channels, self.groups, name=f'resnets_{i}')(x)
    if self.resample:
      x = _Sampler(self.resample == 'up', name='downsamplers_0' if self.resample == 'down' else 'upsamplers_0')(x)
    return x


class Encoder(nn.Module):
  block_out_channels: Sequence[int]
  layers_per_block: int
  latent_channels: int
  groups: int

  @nn.compact
  def __call__(self, x):
    h = _conv(self.block_out_channels[0], 3, 'conv_in')(x)
    for i, channels in enumerate(self.block_out_channels):
      last = i == len(self.block_out_channels) - 1
      h = _Level(channels, self.layers_per_block, self.groups, '' if last else 'down', name=f'down_blocks_{i}')(h)
    h = MidBlock(self.groups, name='mid_block')(h)
    h = nn.silu(_norm(self.groups, 'conv_norm_out')(h))
    return _conv(2 * self.latent_channels, 3, 'conv_out')(h)


class Decoder(nn.Module):
  block_out_channels: Sequence[int]
  layers_per_block: int
  out_channels: int
  groups: int

  @nn.compact
  def __call__(self, z):
    reversed_channels = list(reversed(self.block_out_channels))
    h = _conv(reversed_channels[0], 3, 'conv_in')(z)
    h = MidBlock(self.groups, name='mid_block')(h)
    for i, channels in enumerate(reversed_channels):
      last = i == len(reversed_channels) - 1
      h = _Level(channels, self.layers_per_block + 1, self.groups, '' if last else 'up', name=f'up_blocks_{i}')(h)
    h = nn.silu(_norm(self.groups, 'conv_norm_out')(h))
    return _conv(self.out_channels, 3, 'conv_out')(h)


class SDVAE(nn.Module):
  """AutoencoderKL. `encode(images [B, H, W, 3] in [-1, 1]) -> (mean, std)` of the posterior, each [B, H/8, W/8, 4]
  (unscaled); `decode(latents) -> images`. __call__ is decode(encode mean), for initialisation."""
  block_out_channels: Sequence[int] = (128, 256, 512, 512)
  layers_per_block: int = 2
  latent_channels: int = 4
  norm_num_groups: int = 32
  out_channels: int = 3

  def setup(self):
    channels = tuple(self.block_out_channels)
    self.encoder = Encoder(channels, self.layers_per_block, self.latent_channels, self.norm_num_groups)
    self.quant_conv = _conv(2 * self.latent_channels, 1, None)
    self.post_quant_conv = _conv(self.latent_channels, 1, None)
    self.decoder = Decoder(channels, self.layers_per_block, self.out_channels, self.norm_num_groups)

  def encode(self, images):
    moments = self.quant_conv(self.encoder(images.astype(jnp.float32)))
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.exp(0.5 * jnp.clip(logvar, -30.0, 20.0))

  def decode(self, latents):
    return self.decoder(self.post_quant_conv(latents.astype(jnp.float32)))

  def __call__(self, images):
    return self.decode(self.encode(images)[0])


def torch_name(path) -> str:
  return sit.torch_name(path)


def abstract_params(vae: SDVAE, image_size: int = 64):
  example = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  return jax.eval_shape(lambda: vae.init(jax.random.key(0), jnp.zeros(example.shape))['params'])


def from_state_dict(state_dict: dict, vae: SDVAE | None = None, source: str = 'state dict') -> dict:
  """The SDVAE parameter pytree from a diffusers AutoencoderKL state dict (current or deprecated attention names),
  name by name and shape by shape; anything missing, extra or misshapen is an error naming it."""
  from flax import traverse_util
  vae = vae or SDVAE()
  renamed = {}
  for key, value in state_dict.items():
    parts = key.split('.')
    if len(parts) >= 2 and parts[-2] in _DEPRECATED:
      key = '.'.join(parts[:-2] + [_DEPRECATED[parts[-2]], parts[-1]])
    value = np.asarray(value)
    if '.attentions.' in key and key.endswith('.weight') and value.ndim == 4:  # 1x1 convolutions in older files.
      value = value[:, :, 0, 0]
    renamed[key] = value
  flat = traverse_util.flatten_dict(abstract_params(vae))
  by_name = {torch_name(path): (path, leaf) for path, leaf in flat.items()}
  missing, unexpected = sorted(set(by_name) - set(renamed)), sorted(set(renamed) - set(by_name))
  if missing or unexpected:
    raise ValueError(f'{source} is not an SD-VAE state dict of this shape: missing {missing[:8]} ({len(missing)}), '
                     f'unexpected {unexpected[:8]} ({len(unexpected)})')
  params = {}
  for name, (path, leaf) in by_name.items():
    if renamed[name].shape != tuple(leaf.shape):
      raise ValueError(f'{source}: parameter {name} has shape {renamed[name].shape}, expected {tuple(leaf.shape)}')
    params[path] = renamed[name].astype(np.float32)
  return traverse_util.unflatten_dict(params)


def to_state_dict(params) -> dict:
  from flax import traverse_util
  return {torch_name(path): np.asarray(value) for path, value in traverse_util.flatten_dict(params).items()}


def shape_from_state_dict(state_dict: dict) -> dict:
  """SDVAE's block_out_channels, layers_per_block and latent_channels, read off a state dict's shapes (the group
  count cannot be: it is 32 in the SD VAE)."""
  widths, level = [], 0
  while f'encoder.down_blocks.{level}.resnets.0.conv1.weight' in state_dict:
    widths.append(int(np.shape(state_dict[f'encoder.down_blocks.{level}.resnets.0.conv1.weight'])[0]))
    level += 1
  if not widths:
    raise ValueError('not an SD-VAE state dict: no encoder.down_blocks.0.resnets.0.conv1.weight')
  layers = 0
  while f'encoder.down_blocks.0.resnets.{layers}.conv1.weight' in state_dict:
    layers += 1
  latent = int(np.shape(state_dict['post_quant_conv.weight'])[0])
  return {'block_out_channels': tuple(widths), 'layers_per_block': layers, 'latent_channels': latent}


def shape_from_file(path: str) -> dict:
  return shape_from_state_dict(weights.read_state_dict(path))


def find_files(path: str) -> tuple[str, str | None]:
  """(weights file, config.json or None) of a weights file, a diffusers vae/ folder or a pipeline folder holding
  one: the first of WEIGHT_FILES there."""
  if os.path.isfile(path):
    config = os.path.join(os.path.dirname(path), 'config.json')
    return path, config if os.path.isfile(config) else None
  if not os.path.isdir(path):
    raise errors.InputNotFoundError(f'SD-VAE weights {path!r} not found; nothing is downloaded at run time: pass a '
                                    "downloaded pipeline folder, its vae/ folder or a weights file")
  for folder in (path, os.path.join(path, 'vae')):
    for name in WEIGHT_FILES:
      if os.path.isfile(os.path.join(folder, name)):
        config = os.path.join(folder, 'config.json')
        return os.path.join(folder, name), config if os.path.isfile(config) else None
  raise errors.InputNotFoundError(f'{path} holds no SD-VAE weights: none of {", ".join(WEIGHT_FILES)} there or in '
                                  'its vae/ folder; pass a downloaded diffusers pipeline folder (with vae/) or a '
                                  'vae/ folder in its layout')


def read_config(path: str) -> dict:
  """A diffusers vae/config.json, checked to be an AutoencoderKL's."""
  config = sd_unet.read_json(path)
  if config.get('_class_name', 'AutoencoderKL') != 'AutoencoderKL':
    raise errors.ConfigError(f"{path} is the config of {config['_class_name']}, not of AutoencoderKL: pass the "
                             "pipeline's vae/ folder")
  return config


def from_config(config: dict) -> SDVAE:
  """The SDVAE a diffusers AutoencoderKL config.json describes (its other keys at SDVAE's defaults)."""
  fields = {key: tuple(config[key]) if isinstance(config[key], list) else config[key]
            for key in CONFIG_FIELDS if key in config}
  return SDVAE(**fields)


def latent_scaling(path: str) -> tuple[float, float]:
  """(scaling_factor, shift_factor) of the VAE at `path` (see `find_files`): its config.json's, else diffusers'
  defaults (SCALING_FACTOR, 0). A model's latents are scaling_factor * (raw latents - shift_factor)."""
  _, config_path = find_files(path)
  config = read_config(config_path) if config_path else {}
  return float(config.get('scaling_factor') or SCALING_FACTOR), float(config.get('shift_factor') or 0.0)


def load(path: str, vae: SDVAE | None = None):
  """(module, params) from a weights file (diffusers' diffusion_pytorch_model.safetensors / .bin, or an .npz), a
  vae/ folder or a pipeline folder holding one (`find_files`). The module is `vae`, else the config.json beside the
  weights, else the widths read off the weights (`shape_from_state_dict`, 32 groups)."""
  weights_path, config_path = find_files(path)
  state_dict = weights.read_state_dict(weights_path)
  if vae is None:
    vae = from_config(read_config(config_path)) if config_path else SDVAE(**shape_from_state_dict(state_dict))
  return vae, from_state_dict(state_dict, vae, source=weights_path)

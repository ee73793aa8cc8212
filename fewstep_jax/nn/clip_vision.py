"""CLIP's image tower (Radford et al. 2021) in flax, as transformers' `CLIPVisionModelWithProjection` and the image
half of `CLIPModel` compute it, with their parameter layout: the towers of the CLIP models that text-to-image papers
score with (OpenAI CLIP ViT-L/14, OpenCLIP ViT-g/14 and ViT-H/14 in transformers' layout), beside the text tower of
clip_text.py; `clip_score` is the metric they report.

Followed: transformers' `models/clip/modeling_clip.py` (`CLIPVisionEmbeddings`, `CLIPVisionTransformer`,
`CLIPVisionModelWithProjection`, `CLIPModel.get_image_features`) and `configuration_clip.py` (`CLIPVisionConfig`).
Non-overlapping patches by a bias-free convolution, a learned class token and position embeddings, a layer norm
before the encoder (transformers' `pre_layrnorm`), the text tower's pre-LN blocks without the causal mask, the class
token's final state through `post_layernorm`, then the bias-free `visual_projection`.

  tower, params = clip_vision.load('clip-vit-large-patch14')       # config.json + model.safetensors (a CLIPModel)
  embeds = tower.apply({'params': params}, pixels)                 # pixels [B, 224, 224, 3] normalised, NHWC

`preprocess` resizes images in [0, 1] and normalises them with CLIP's mean and std; the resize is jax.image's
antialiased bicubic, not PIL's (CLIPImageProcessor's), which differs by up to a few 1e-3 in the pixels.
"""
import dataclasses
import json
import os
from typing import Any

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from fewstep_jax import errors, weight_files
from fewstep_jax.nn import clip_text
from fewstep_jax.nn.layers import TorchLayerNorm

# CLIPImageProcessor's normalisation (OpenAI's and OpenCLIP's).
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
  """The fields of transformers' CLIPVisionConfig that change the computation, with its defaults, and the projection
  width (a CLIPModel's top-level projection_dim)."""
  hidden_size: int = 768
  intermediate_size: int = 3072
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  image_size: int = 224
  patch_size: int = 32
  num_channels: int = 3
  hidden_act: str = 'quick_gelu'
  layer_norm_eps: float = 1e-5
  projection_dim: int = 512

  def __post_init__(self):
    if self.hidden_act not in clip_text.ACTIVATIONS:
      raise errors.ConfigError(f'CLIP vision config: hidden_act {self.hidden_act!r} is not ported; use one of '
                               f'{sorted(clip_text.ACTIVATIONS)}')
    if self.image_size % self.patch_size:
      raise errors.ConfigError(f'CLIP vision config: image_size {self.image_size} is not a multiple of patch_size '
                               f'{self.patch_size}')

  @classmethod
  def from_json(cls, config: dict) -> 'CLIPVisionConfig':
    """From a CLIPModel's config.json (its vision_config and projection_dim) or a CLIPVisionModelWithProjection's."""
    vision = config.get('vision_config', config)
    fields = {field.name: vision[field.name] for field in dataclasses.fields(cls) if field.name in vision}
    fields['projection_dim'] = config.get('projection_dim', vision.get('projection_dim', 512))
    return cls(**fields)


# OpenAI CLIP ViT-L/14 (224 px): the CLIP score model of most text-to-image papers.
CLIP_L14 = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                            patch_size=14, projection_dim=768)
# OpenCLIP ViT-g/14 (laion2b_s34b_b88k) as transformers stores it: GELU, 40 layers of width 1408.
OPENCLIP_G14 = CLIPVisionConfig(hidden_size=1408, intermediate_size=6144, num_hidden_layers=40,
                                num_attention_heads=16, patch_size=14, hidden_act='gelu', projection_dim=1024)
TINY = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                        image_size=16, patch_size=4, projection_dim=24)
PRESETS = {'clip_l14': CLIP_L14, 'openclip_g14': OPENCLIP_G14, 'tiny': TINY}


class _VisionEmbeddings(nn.Module):
  config: CLIPVisionConfig
  dtype: Any

  @nn.compact
  def __call__(self, pixels):
    config, (batch, height, width, channels) = self.config, pixels.shape
    p = config.patch_size
    if height != config.image_size or width != config.image_size:
      raise errors.ConfigError(f'CLIP vision tower of {config.image_size} px given {height}x{width} images: resize '
                               'them first (clip_vision.preprocess)')
    weight = self.param('patch_embedding', nn.initializers.normal(0.02), (config.hidden_size, channels, p, p))
    patches = pixels.reshape(batch, height // p, p, width // p, p, channels)
    # Conv2d(kernel p, stride p, no bias) on NCHW: out[b, d, h, w] = sum_{c, i, j} W[d, c, i, j] x[b, c, hp + i, wp + j].
    tokens = jnp.einsum('bhiwjc,dcij->bhwd', patches.astype(self.dtype), weight.astype(self.dtype))
    tokens = tokens.reshape(batch, -1, config.hidden_size)
    cls = self.param('class_embedding', nn.initializers.normal(0.02), (config.hidden_size,)).astype(self.dtype)
    x = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, config.hidden_size)), tokens], axis=1)
    positions = clip_text._Table(x.shape[1], config.hidden_size, self.dtype, name='position_embedding')(
        jnp.arange(x.shape[1]))
    return x + positions[None]


class _VisionModel(nn.Module):
  """transformers' CLIPVisionTransformer, the `vision_model` of the published files."""
  config: CLIPVisionConfig
  dtype: Any

  @nn.compact
  def __call__(self, pixels):
    config = self.config
    x = _VisionEmbeddings(config, self.dtype, name='embeddings')(pixels)
    x = TorchLayerNorm(config.layer_norm_eps, name='pre_layrnorm')(x)  # transformers' spelling.
    for i in range(config.num_hidden_layers):
      x = clip_text._EncoderLayer(config, self.dtype, causal=False, name=f'encoder_layers_{i}')(x)
    return TorchLayerNorm(config.layer_norm_eps, name='post_layernorm')(x[:, 0])


class CLIPVisionEncoder(nn.Module):
  """CLIPVisionModelWithProjection's image_embeds: pixels [B, S, S, C] (S = image_size, normalised) -> [B, P]
  float32. `dtype` is the compute dtype."""
  config: CLIPVisionConfig = CLIP_L14
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pixels):
    pooled = _VisionModel(self.config, self.dtype, name='vision_model')(pixels)
    projection = clip_text._linear(self.config.projection_dim, 'visual_projection', self.dtype, use_bias=False)
    return projection(pooled).astype(jnp.float32)


def preprocess(images, size: int):
  """Images [B, H, W, 3] in [0, 1] -> CLIP's input: the shorter side resized to `size` (bicubic, antialiased), the
  centre size x size crop, normalised by MEAN and STD (CLIPImageProcessor's steps)."""
  batch, height, width, channels = images.shape
  scale = size / min(height, width)
  new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
  resized = jax.image.resize(images.astype(jnp.float32), (batch, new_h, new_w, channels), 'bicubic', antialias=True)
  top, left = (new_h - size) // 2, (new_w - size) // 2
  crop = resized[:, top:top + size, left:left + size]
  return (crop - jnp.asarray(MEAN)) / jnp.asarray(STD)


def clip_score(image_embeds, text_embeds):
  """[B] CLIP score of each image-text pair: max(100 cos(image, text), 0) (torchmetrics' CLIPScore, Hessel et al.
  2021 with w = 100), in float32."""
  a = image_embeds / jnp.linalg.norm(image_embeds, axis=-1, keepdims=True)
  b = text_embeds / jnp.linalg.norm(text_embeds, axis=-1, keepdims=True)
  return jnp.maximum(100.0 * jnp.sum(a * b, axis=-1), 0.0)


def torch_name(path) -> str:
  """The published name of a flax path: the encoder layers as `encoder.layers.N`, the class embedding and patch
  convolution as transformers names them."""
  names = list(path)
  if names[-1] == 'patch_embedding':
    names.append('weight')
  joined = clip_text.torch_name(names)
  return joined.replace('encoder_layers.', 'encoder.layers.')


def abstract_params(config: CLIPVisionConfig):
  pixels = jnp.zeros((1, config.image_size, config.image_size, config.num_channels))
  return jax.eval_shape(lambda: CLIPVisionEncoder(config).init(jax.random.key(0), pixels)['params'])


def _by_name(config: CLIPVisionConfig) -> dict:
  flat = traverse_util.flatten_dict(abstract_params(config))
  return {torch_name(path): (path, leaf) for path, leaf in flat.items()}


def weight_shapes(config: CLIPVisionConfig) -> dict:
  return {name: tuple(leaf.shape) for name, (_, leaf) in _by_name(config).items()}


def from_state_dict(state_dict: dict, config: CLIPVisionConfig, source: str = 'state dict', dtype=np.float32):
  """The CLIPVisionEncoder parameters from a transformers CLIPModel or CLIPVisionModelWithProjection state dict (the
  text tower's weights, logit_scale and position_ids buffers ignored), name by name and shape by shape; every
  missing or misshapen weight named in one ConfigError."""
  by_name = _by_name(config)
  shape = lambda name: tuple(np.shape(state_dict[name]))
  missing = sorted(set(by_name) - set(state_dict))
  misshapen = [f'{name} {shape(name)} (expected {tuple(leaf.shape)})'
               for name, (_, leaf) in sorted(by_name.items()) if name in state_dict and shape(name) != leaf.shape]
  if missing or misshapen:
    raise errors.ConfigError(f'{source} does not hold the CLIP image tower of {config}: missing {missing[:6]} '
                             f'({len(missing)}), misshapen {misshapen[:6]}; its config.json must describe these '
                             'weights')
  flat = {path: np.asarray(state_dict[name]).astype(dtype, copy=False) for name, (path, _) in by_name.items()}
  return traverse_util.unflatten_dict(flat)


def random_weights(config: CLIPVisionConfig, seed: int = 0) -> dict:
  """A float32 state dict in the published layout with a non-degenerate forward pass (tests and parity checks)."""
  rng = np.random.default_rng(seed)
  weights = {}
  for name, shape in sorted(weight_shapes(config).items()):
    if 'norm' in name:
      weights[name] = (1.0 if name.endswith('weight') else 0.0) + 0.1 * rng.standard_normal(shape)
    elif 'embedding' in name and 'patch' not in name:
      weights[name] = 0.5 * rng.standard_normal(shape)
    elif name.endswith('weight'):
      weights[name] = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
    else:
      weights[name] = 0.1 * rng.standard_normal(shape)
  return {name: value.astype(np.float32) for name, value in weights.items()}


def load(folder: str, config: CLIPVisionConfig | None = None, dtype=jnp.float32):
  """(CLIPVisionEncoder, params) from a transformers model folder (a CLIPModel or CLIPVisionModelWithProjection):
  its config.json (or `config`) and the first of clip_text.WEIGHT_FILES, read without running code from it."""
  path = clip_text.weights_file(folder)
  if config is None:
    config_path = os.path.join(folder, 'config.json')
    if not os.path.isfile(config_path):
      raise errors.InputNotFoundError(f'{config_path} not found: pass a downloaded CLIP model folder, or name its '
                                      f'config (config=clip_vision.PRESETS[...]: {sorted(PRESETS)})')
    with open(config_path) as file:
      config = CLIPVisionConfig.from_json(json.load(file))
  params = from_state_dict(weight_files.read_state_dict(path), config, source=path, dtype=np.dtype(dtype))
  return CLIPVisionEncoder(config, dtype), params

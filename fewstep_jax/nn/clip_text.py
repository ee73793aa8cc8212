"""CLIP's text transformer (Radford et al. 2021) in flax, as transformers' `CLIPTextModel` and
`CLIPTextModelWithProjection` compute it, with their parameter layout: the text encoders of Stable Diffusion 1.5
(`text_encoder/`, CLIP ViT-L/14) and SDXL (`text_encoder/`, CLIP ViT-L/14, and `text_encoder_2/`, OpenCLIP
ViT-bigG/14 with its projection).

Followed: transformers' `models/clip/modeling_clip.py` (`CLIPTextEmbeddings`, `CLIPAttention`, `CLIPMLP`,
`CLIPEncoderLayer`, `CLIPTextModel`, `CLIPTextModelWithProjection`) and `configuration_clip.py` (`CLIPTextConfig`'s
fields and defaults). Token plus learned position embeddings; pre-LN blocks of causal self-attention and an MLP with
the config's `hidden_act` (quick_gelu, x sigmoid(1.702 x), for CLIP; the exact erf GELU for OpenCLIP bigG); a final
layer norm; the pooled output is the final hidden state at the end-of-text token, found as transformers finds it:
the argmax of the ids when the config's eos_token_id is 2 (the published configs: CLIP's end-of-text token is the
largest id), otherwise the first position of eos_token_id. The projection is a linear map without bias.

Parameters keep transformers' names and layouts as the published files store them (`text_model.encoder.layers.3.
self_attn.q_proj.weight` is the flax path `('text_model', 'encoder', 'layers_3', 'self_attn', 'q_proj', 'weight')`,
`torch_name`); files written by transformers 5's CLIPTextModel, which drops the `text_model.` prefix, are read too.
The stored `text_model.embeddings.position_ids` buffer of older files is ignored, as transformers ignores it.

  encoder, params = clip_text.load('sd15/text_encoder')                          # config.json + model.safetensors
  out = encoder.apply({'params': params}, input_ids)                              # input_ids [B, 77] int32
  out.last_hidden_state   # [B, 77, 768]  after the final layer norm: SD 1.5's condition
  out.hidden_states[-2]   # [B, 77, D]    the penultimate layer's output, before the final layer norm: SDXL's
  out.pooled              # [B, D]        last_hidden_state at the end-of-text token
  out.projected           # [B, P]        text_projection(pooled): SDXL's text_embeds from text_encoder_2/

Frozen encoders: `load(..., dtype=jnp.bfloat16)` stores the parameters and computes in bfloat16, with layer-norm
statistics and attention logits in float32; outputs are float32 either way. Sequences may be shorter than
max_position_embeddings; there is no padding mask (the diffusers pipelines pass none).
"""
import dataclasses
import json
import os
from typing import Any, NamedTuple

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from fewstep_jax import errors
from fewstep_jax import weight_files
from fewstep_jax.nn import edm_unets, sit
from fewstep_jax.nn.layers import TorchLayerNorm

# The weight files of a transformers model folder, in the order they are looked for: full precision first.
WEIGHT_FILES = ('model.safetensors', 'model.fp16.safetensors', 'pytorch_model.bin', 'pytorch_model.fp16.bin')
# A buffer that files written before transformers 4.31 hold; transformers ignores it, and so does this port.
IGNORED_WEIGHTS = ('text_model.embeddings.position_ids',)
WITH_PROJECTION = 'CLIPTextModelWithProjection'

# hidden_act -> activation, as transformers' ACT2FN computes it.
ACTIVATIONS = {
    'quick_gelu': lambda x: x * jax.nn.sigmoid(1.702 * x),
    'gelu': lambda x: jax.nn.gelu(x, approximate=False),
}


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
  """The fields of transformers' CLIPTextConfig that change the computation, with its defaults. projection_dim is
  the width of `text_projection`, 0 for a CLIPTextModel, which has none (transformers keeps projection_dim in every
  config; `from_json` zeroes it unless the config's architecture is CLIPTextModelWithProjection)."""
  vocab_size: int = 49408
  hidden_size: int = 512
  intermediate_size: int = 2048
  num_hidden_layers: int = 12
  num_attention_heads: int = 8
  max_position_embeddings: int = 77
  hidden_act: str = 'quick_gelu'
  layer_norm_eps: float = 1e-5
  eos_token_id: int = 49407
  projection_dim: int = 0

  def __post_init__(self):
    if self.hidden_act not in ACTIVATIONS:
      raise errors.ConfigError(f'CLIP text config: hidden_act {self.hidden_act!r} is not ported; use one of '
                               f'{sorted(ACTIVATIONS)}')
    if self.hidden_size % self.num_attention_heads:
      raise errors.ConfigError(f'CLIP text config: hidden_size {self.hidden_size} is not a multiple of '
                               f'num_attention_heads {self.num_attention_heads}')
    if not isinstance(self.eos_token_id, int) or isinstance(self.eos_token_id, bool):
      raise errors.ConfigError(f'CLIP text config: eos_token_id must be one integer, not {self.eos_token_id!r}')

  @classmethod
  def from_json(cls, config: dict) -> 'CLIPTextConfig':
    """From a transformers config.json's contents; absent fields take transformers' defaults, unknown ones are
    ignored (they change nothing here: dropout, initialisation, token ids other than eos)."""
    fields = {field.name: config[field.name] for field in dataclasses.fields(cls) if field.name in config}
    if WITH_PROJECTION not in (config.get('architectures') or ()):
      fields['projection_dim'] = 0
    elif 'projection_dim' not in fields:
      fields['projection_dim'] = 512  # transformers' default.
    return cls(**fields)


# CLIP ViT-L/14's text tower: SD 1.5's text_encoder/ and SDXL's text_encoder/ (a CLIPTextModel).
CLIP_L = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                        hidden_act='quick_gelu', eos_token_id=2)
# OpenCLIP ViT-bigG/14's text tower: SDXL's text_encoder_2/ (a CLIPTextModelWithProjection).
OPENCLIP_BIGG = CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                               hidden_act='gelu', eos_token_id=2, projection_dim=1280)
# For tests: three layers, so that the penultimate hidden state is neither the embeddings nor the last layer's.
TINY = CLIPTextConfig(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
                      max_position_embeddings=16, eos_token_id=2, projection_dim=24)
PRESETS = {'clip_l': CLIP_L, 'openclip_bigg': OPENCLIP_BIGG, 'tiny': TINY}


class CLIPTextOutput(NamedTuple):
  """What the encoder returns, float32. L is the sequence length, D hidden_size, P projection_dim."""
  last_hidden_state: jax.Array  # [B, L, D] after the final layer norm.
  hidden_states: tuple  # num_hidden_layers + 1 arrays [B, L, D]: the embeddings, then each layer's (no final LN).
  pooled: jax.Array  # [B, D] last_hidden_state at the end-of-text token.
  projected: jax.Array | None  # [B, P] text_projection(pooled); None without a projection.


class _Table(nn.Module):
  """An nn.Embedding: its `weight` [rows, width]."""
  rows: int
  width: int
  dtype: Any

  @nn.compact
  def __call__(self, ids):
    return self.param('weight', nn.initializers.normal(0.02), (self.rows, self.width)).astype(self.dtype)[ids]


def _linear(features, name, dtype, use_bias=True):
  return edm_unets.Linear(features, use_bias=use_bias, init_mode='kaiming_uniform', dtype=dtype, name=name)


class _Attention(nn.Module):
  """CLIPAttention, under a causal mask in the text tower: q, k, v and out projections, head_dim^-0.5 scaling."""
  heads: int
  dtype: Any
  causal: bool = True

  @nn.compact
  def __call__(self, x):
    batch, tokens, width = x.shape
    split = lambda h: h.reshape(batch, tokens, self.heads, width // self.heads)
    q, k, v = (split(_linear(width, f'{name}_proj', self.dtype)(x)) for name in 'qkv')
    out = jax.nn.dot_product_attention(q, k, v, is_causal=self.causal)  # Logits and softmax in float32.
    return _linear(width, 'out_proj', self.dtype)(out.reshape(batch, tokens, width))


class _Mlp(nn.Module):
  intermediate: int
  activation: str
  dtype: Any

  @nn.compact
  def __call__(self, x):
    h = ACTIVATIONS[self.activation](_linear(self.intermediate, 'fc1', self.dtype)(x))
    return _linear(x.shape[-1], 'fc2', self.dtype)(h)


class _EncoderLayer(nn.Module):
  """CLIPEncoderLayer: x + attention(LN(x)), then x + MLP(LN(x)); causal in the text tower, not in the image
  tower (clip_vision.py), whose config has the same fields."""
  config: Any
  dtype: Any
  causal: bool = True

  @nn.compact
  def __call__(self, x):
    config = self.config
    x = x + _Attention(config.num_attention_heads, self.dtype, self.causal, name='self_attn')(
        TorchLayerNorm(config.layer_norm_eps, name='layer_norm1')(x))
    return x + _Mlp(config.intermediate_size, config.hidden_act, self.dtype, name='mlp')(
        TorchLayerNorm(config.layer_norm_eps, name='layer_norm2')(x))


class _Embeddings(nn.Module):
  config: CLIPTextConfig
  dtype: Any

  @nn.compact
  def __call__(self, input_ids):
    config = self.config
    tokens = _Table(config.vocab_size, config.hidden_size, self.dtype, name='token_embedding')(input_ids)
    positions = _Table(config.max_position_embeddings, config.hidden_size, self.dtype, name='position_embedding')(
        jnp.arange(input_ids.shape[1]))
    return tokens + positions[None]


class _Encoder(nn.Module):
  config: CLIPTextConfig
  dtype: Any

  @nn.compact
  def __call__(self, x):
    states = [x]
    for i in range(self.config.num_hidden_layers):
      states.append(_EncoderLayer(self.config, self.dtype, name=f'layers_{i}')(states[-1]))
    return states


class _TextModel(nn.Module):
  """transformers 4's CLIPTextTransformer, the `text_model` of the published files."""
  config: CLIPTextConfig
  dtype: Any

  def setup(self):
    self.embeddings = _Embeddings(self.config, self.dtype)
    self.encoder = _Encoder(self.config, self.dtype)
    self.final_layer_norm = TorchLayerNorm(self.config.layer_norm_eps)

  def __call__(self, input_ids):
    states = self.encoder(self.embeddings(input_ids))
    return states, self.final_layer_norm(states[-1])


def eos_positions(input_ids: jax.Array, eos_token_id: int) -> jax.Array:
  """[B] int: where transformers' CLIPTextModel pools each row of input_ids [B, L]."""
  if eos_token_id == 2:  # transformers keeps the argmax for configs written before its eos_token_id fix.
    return jnp.argmax(input_ids, axis=-1)
  return jnp.argmax(input_ids == eos_token_id, axis=-1)


class CLIPTextEncoder(nn.Module):
  """CLIPTextModel, or CLIPTextModelWithProjection when config.projection_dim > 0: input_ids [B, L] (L <=
  max_position_embeddings) -> CLIPTextOutput. `dtype` is the compute dtype."""
  config: CLIPTextConfig = CLIP_L
  dtype: Any = jnp.float32

  def setup(self):
    self.text_model = _TextModel(self.config, self.dtype)
    if self.config.projection_dim:
      self.text_projection = _linear(self.config.projection_dim, None, self.dtype, use_bias=False)

  def __call__(self, input_ids) -> CLIPTextOutput:
    batch, tokens = input_ids.shape
    if tokens > self.config.max_position_embeddings:
      raise errors.ConfigError(f'{tokens} tokens, but the CLIP text encoder has '
                               f'{self.config.max_position_embeddings} positions: truncate the ids (the tokenizer '
                               'does)')
    states, last = self.text_model(input_ids)
    pooled = last[jnp.arange(batch), eos_positions(input_ids, self.config.eos_token_id)]
    projected = self.text_projection(pooled) if self.config.projection_dim else None
    as_float32 = lambda x: None if x is None else x.astype(jnp.float32)
    return CLIPTextOutput(as_float32(last), tuple(as_float32(h) for h in states), as_float32(pooled),
                          as_float32(projected))

  def final_layer_norm(self, hidden_state):
    """The final layer norm on any hidden state [B, L, D] (diffusers' clip_skip for SD 1.5 normalises
    hidden_states[-(clip_skip + 1)] so)."""
    return self.text_model.final_layer_norm(hidden_state.astype(self.dtype)).astype(jnp.float32)


def torch_name(path) -> str:
  return sit.torch_name(path)


def abstract_params(config: CLIPTextConfig):
  encoder = CLIPTextEncoder(config)
  ids = jnp.zeros((1, config.max_position_embeddings), jnp.int32)
  return jax.eval_shape(lambda: encoder.init(jax.random.key(0), ids)['params'])


def _by_name(config: CLIPTextConfig) -> dict:
  """{published name: (flax path, abstract leaf)} of every weight of `config`'s encoder."""
  flat = traverse_util.flatten_dict(abstract_params(config))
  return {torch_name(path): (path, leaf) for path, leaf in flat.items()}


def weight_shapes(config: CLIPTextConfig) -> dict:
  """{published name: shape} of every weight of `config`'s encoder."""
  return {name: tuple(leaf.shape) for name, (_, leaf) in _by_name(config).items()}


def _published_names(state_dict: dict) -> dict:
  """The state dict under the published names: transformers 5 saves a CLIPTextModel without the `text_model.`
  prefix (its WithProjection keeps it); the ignored buffers are dropped."""
  if not any(name.startswith('text_model.') for name in state_dict):
    state_dict = {f'text_model.{name}': value for name, value in state_dict.items()}
  return {name: value for name, value in state_dict.items() if name not in IGNORED_WEIGHTS}


def from_state_dict(state_dict: dict, config: CLIPTextConfig, source: str = 'state dict', dtype=np.float32) -> dict:
  """The CLIPTextEncoder parameter pytree from a transformers CLIP text state dict, name by name and shape by
  shape, as `dtype`. Every missing, unexpected or misshapen weight is named in one ConfigError."""
  state_dict = _published_names(state_dict)
  by_name = _by_name(config)
  shape = lambda name: tuple(np.shape(state_dict[name]))
  missing = sorted(set(by_name) - set(state_dict))
  unexpected = sorted(set(state_dict) - set(by_name))
  misshapen = [f'{name} {shape(name)} (expected {tuple(leaf.shape)})'
               for name, (_, leaf) in sorted(by_name.items()) if name in state_dict and shape(name) != leaf.shape]
  if missing or unexpected or misshapen:
    listed = lambda names: f'{names[:6]}{" ..." if len(names) > 6 else ""} ({len(names)})'
    raise errors.ConfigError(
        f'{source} does not match the CLIP text encoder of {config}: missing {listed(missing)}, unexpected '
        f'{listed(unexpected)}, misshapen {listed(misshapen)}; its folder\'s config.json must describe these weights '
        f'(architectures {WITH_PROJECTION} for text_projection.weight)')
  flat = {path: np.asarray(state_dict[name]).astype(dtype, copy=False) for name, (path, _) in by_name.items()}
  return traverse_util.unflatten_dict(flat)


def to_state_dict(params) -> dict:
  return {torch_name(path): np.asarray(value) for path, value in traverse_util.flatten_dict(params).items()}


def random_weights(config: CLIPTextConfig, seed: int = 0) -> dict:
  """A float32 state dict in the published layout with a non-degenerate forward pass (tests and parity checks)."""
  rng = np.random.default_rng(seed)
  weights = {}
  for name, shape in sorted(weight_shapes(config).items()):
    if 'norm' in name:
      weights[name] = (1.0 if name.endswith('weight') else 0.0) + 0.1 * rng.standard_normal(shape)
    elif 'embedding' in name:
      weights[name] = 0.5 * rng.standard_normal(shape)
    elif name.endswith('weight'):
      weights[name] = rng.standard_normal(shape) / np.sqrt(shape[1])
    else:
      weights[name] = 0.1 * rng.standard_normal(shape)
  return {name: value.astype(np.float32) for name, value in weights.items()}


def read_config(folder: str) -> CLIPTextConfig:
  """The CLIPTextConfig of a transformers model folder's config.json."""
  path = os.path.join(folder, 'config.json')
  if not os.path.isfile(path):
    raise errors.InputNotFoundError(f'{path} not found: pass a diffusers pipeline\'s text_encoder/ or text_encoder_2/ '
                                    f'folder, or name its config (config=clip_text.PRESETS[...]: {sorted(PRESETS)})')
  try:
    with open(path) as file:
      contents = json.load(file)
  except (OSError, ValueError) as error:
    raise errors.ConfigError(f'{path} cannot be read as JSON ({error})') from None
  if not isinstance(contents, dict):
    raise errors.ConfigError(f'{path} holds no JSON object')
  return CLIPTextConfig.from_json(contents)


def weights_file(folder: str) -> str:
  """The folder's weights: the first of WEIGHT_FILES it holds."""
  if not os.path.isdir(folder):
    raise errors.InputNotFoundError(f'{folder!r} is not a folder; nothing is downloaded: pass the text_encoder/ or '
                                    'text_encoder_2/ folder of a downloaded diffusers pipeline')
  for name in WEIGHT_FILES:
    if os.path.isfile(os.path.join(folder, name)):
      return os.path.join(folder, name)
  raise errors.InputNotFoundError(f'{folder} holds none of {", ".join(WEIGHT_FILES)} (sharded files are not read); '
                                  'nothing is downloaded: pass the folder of a complete download')


def load(folder: str, config: CLIPTextConfig | None = None, dtype=jnp.float32):
  """(CLIPTextEncoder, params) from a transformers model folder: its config.json (or `config`) and the first of
  WEIGHT_FILES it holds, read without running code from it; parameters stored in `dtype`, the compute dtype."""
  path = weights_file(folder)
  config = config or read_config(folder)
  params = from_state_dict(weight_files.read_state_dict(path), config, source=path, dtype=np.dtype(dtype))
  return CLIPTextEncoder(config, dtype), params

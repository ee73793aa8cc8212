"""Prompt conditions as the Stable Diffusion pipelines compute them, from a downloaded diffusers pipeline folder.

  encoder = text.load_encoder('sd15/text_encoder')             # its tokenizer from sd15/tokenizer/
  states, pooled = encoder.encode(['a photo of a cat'])          # [1, 77, 768], None

  encoders = text.load_pipeline('sdxl')                          # text_encoder(_2)/ with tokenizer(_2)/
  states, pooled = text.encode(encoders, ['a photo of a cat'])   # [1, 77, 768 + 1280 = 2048], [1, 1280]

What each pipeline reads (`CONDITIONS`): SD 1.5 the last hidden state after the final layer norm, and no pooled
vector; SDXL the penultimate hidden state (before the final layer norm) of each encoder, concatenated along the
feature axis, and the projected pooled output (`text_embeds`) of its second encoder, text_encoder_2/. A pipeline
folder with a text_encoder_2/ is taken for SDXL; `condition=` names it otherwise. Nothing is downloaded; nothing in
the folders is run (weights through `fewstep_jax.weight_files`, the tokenizer through `tokenizer`).
"""
import dataclasses
import functools
import os
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from fewstep_jax import errors
from fewstep_jax.nn import clip_text
from fewstep_jax.text import tokenizer as tokenizer_lib

# A pipeline's encoder folders, in the order their states are concatenated, with their tokenizers' folders.
TOKENIZER_FOLDERS = {'text_encoder': 'tokenizer', 'text_encoder_2': 'tokenizer_2'}


@dataclasses.dataclass(frozen=True)
class Condition:
  """What a pipeline reads off a CLIPTextOutput: `states` [B, L, D], and whether it takes the projected pooled output
  [B, P] (where the encoder has a projection)."""
  states: Callable
  pooled: bool


CONDITIONS = {
    'sd15': Condition(states=lambda out: out.last_hidden_state, pooled=False),
    'sdxl': Condition(states=lambda out: out.hidden_states[-2], pooled=True),
}


class TextEncoder(NamedTuple):
  """A CLIP text encoder, its parameters and tokenizer, and the name of the condition (in CONDITIONS) it gives."""
  module: clip_text.CLIPTextEncoder
  params: dict
  tokenizer: tokenizer_lib.CLIPTokenizer
  condition: str

  def encode(self, prompts: Sequence[str]):
    """(states float32 [B, 77, D], pooled float32 [B, P] or None) of the prompts, as the pipeline conditions on them."""
    return _apply(self.module, self.condition)(self.params, self.tokenizer(prompts))


@functools.cache
def _apply(module: clip_text.CLIPTextEncoder, condition: str):
  read = CONDITIONS[condition]

  def apply(params, input_ids):
    out = module.apply({'params': params}, input_ids)
    return read.states(out), out.projected if read.pooled else None

  return jax.jit(apply)


def _condition(name: str) -> str:
  if name not in CONDITIONS:
    raise errors.ConfigError(f'condition {name!r} is not known; use one of {sorted(CONDITIONS)}')
  return name


def _guess_condition(folder: str) -> str:
  """'sdxl' when the encoder's pipeline folder also holds a text_encoder_2/, else 'sd15'."""
  pipeline = os.path.dirname(os.path.abspath(folder))
  return 'sdxl' if os.path.isdir(os.path.join(pipeline, 'text_encoder_2')) else 'sd15'


def load_encoder(folder: str, tokenizer_folder: str | None = None, condition: str | None = None,
                 dtype=jnp.float32) -> TextEncoder:
  """The TextEncoder of a pipeline's text_encoder/ or text_encoder_2/ folder (config.json and model.safetensors or
  model.fp16.safetensors); its tokenizer from `tokenizer_folder`, by default the sibling tokenizer/ or tokenizer_2/."""
  if tokenizer_folder is None:
    name = os.path.basename(os.path.normpath(folder))
    if name not in TOKENIZER_FOLDERS:
      raise errors.ConfigError(f'{folder}: name its tokenizer folder (tokenizer_folder=...): only a pipeline\'s '
                               f'{" or ".join(TOKENIZER_FOLDERS)} folder has a known tokenizer beside it')
    tokenizer_folder = os.path.join(os.path.dirname(os.path.normpath(folder)), TOKENIZER_FOLDERS[name])
  condition = _condition(condition or _guess_condition(folder))
  tokenizer = tokenizer_lib.CLIPTokenizer.from_folder(tokenizer_folder)
  module, params = clip_text.load(folder, dtype=dtype)
  _check_pair(tokenizer, module.config, tokenizer_folder, folder)
  return TextEncoder(module, params, tokenizer, condition)


def _check_pair(tokenizer: tokenizer_lib.CLIPTokenizer, config: clip_text.CLIPTextConfig, tokenizer_folder: str,
                folder: str):
  """A tokenizer whose ids or lengths the encoder cannot take is refused here: an embedding lookup past the table's
  end would be clamped silently."""
  largest = max(tokenizer.vocab.values())
  if largest >= config.vocab_size or tokenizer.max_length > config.max_position_embeddings:
    raise errors.ConfigError(
        f'{tokenizer_folder} (ids up to {largest}, {tokenizer.max_length} tokens) does not fit the encoder in {folder} '
        f'(vocab_size {config.vocab_size}, max_position_embeddings {config.max_position_embeddings}): pass the '
        'tokenizer folder of the same pipeline')


def load_pipeline(folder: str, condition: str | None = None, dtype=jnp.float32) -> tuple:
  """The TextEncoders of a diffusers pipeline folder: text_encoder/ and, where it has one, text_encoder_2/."""
  present = [name for name in TOKENIZER_FOLDERS if os.path.isdir(os.path.join(folder, name))]
  if 'text_encoder' not in present:
    raise errors.InputNotFoundError(f'{os.path.join(folder, "text_encoder")} not found; nothing is downloaded: pass '
                                    'the folder of a downloaded diffusers pipeline (with text_encoder/ and tokenizer/)')
  condition = _condition(condition or ('sdxl' if 'text_encoder_2' in present else 'sd15'))
  return tuple(load_encoder(os.path.join(folder, name), condition=condition, dtype=dtype) for name in present)


def tokenize(encoders: Sequence[TextEncoder], prompts: Sequence[str]) -> list:
  """Each encoder's token ids of the prompts, int32 [B, 77] per encoder (their tokenizers may pad differently)."""
  return [encoder.tokenizer(prompts) for encoder in encoders]


def encode_ids(encoders: Sequence[TextEncoder], ids: Sequence, params: Sequence | None = None):
  """`encode` from token ids (one int32 [B, 77] per encoder, as `tokenize` gives): traceable, so that a step can run
  the frozen encoders on device; `params` (one tree per encoder) replaces the encoders' own, to pass them as
  arguments of a jitted function rather than constants."""
  params = params or [encoder.params for encoder in encoders]
  outputs = [_apply(encoder.module, encoder.condition)(p, i) for encoder, p, i in zip(encoders, params, ids)]
  pooled = [p for _, p in outputs if p is not None]
  return jnp.concatenate([states for states, _ in outputs], axis=-1), (pooled[-1] if pooled else None)


def encode(encoders: Sequence[TextEncoder], prompts: Sequence[str]):
  """(states [B, 77, sum of D], pooled [B, P] or None): each encoder's states concatenated along the features, and
  the pooled output of the last encoder that gives one (SDXL's pipeline keeps text_encoder_2's)."""
  return encode_ids(encoders, tokenize(encoders, prompts))


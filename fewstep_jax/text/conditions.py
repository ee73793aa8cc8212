"""A diffusers pipeline's text conditions as the project's (fewstep_jax/conditions.py): prompts encoded by the
pipeline's text encoders, with the null condition and the size and crop ids that its pipeline class uses.

  prompts = text.read_prompts('prompts.txt')                             # one a line
  conditioning = text.pipeline_conditioning('stable-diffusion-xl-base-1.0', prompts, image_size=(1024, 1024))

- SD 1.5 (StableDiffusionPipeline): {'tokens': the last hidden state [B, 77, 768]}; the null is the empty prompt's
  encoding, the pipeline's negative prompt '' under classifier-free guidance.
- SDXL (StableDiffusionXLPipeline): {'tokens': [B, 77, 2048], 'pooled': [B, 1280], 'time_ids': [B, 6]}, the ids
  (original height, width, crop top, left, target height, width) = (H, W, 0, 0, H, W) of an H x W image. The null's
  tokens and pooled vector are zeros where the pipeline's `force_zeros_for_empty_prompt` holds (model_index.json;
  true for SDXL base, and the pipeline's default), else the empty prompt's; its time_ids are the prompts', as the
  pipeline's negative sizes default to the positive ones.
"""
import json
import os
from typing import Sequence

import numpy as np

from fewstep_jax import errors
from fewstep_jax.conditions import Conditioning
from fewstep_jax.text.encoders import encode, load_pipeline

MODEL_INDEX = 'model_index.json'


PROMPT_KEYS = ('prompt', 'caption', 'text')  # Where a JSONL prompts file's line holds its prompt.


def read_prompts(path: str) -> list:
  """The prompts of a text file, one a line (surrounding white space stripped, empty lines skipped), or of a JSONL
  file (its first line starts with '{'): one {"prompt" | "caption" | "text": str} a line."""
  if not os.path.isfile(path):
    raise errors.InputNotFoundError(f'prompts file {path!r} not found: write the prompts one a line and give '
                                    'its path')
  with open(path, encoding='utf-8') as file:
    lines = [line.strip() for line in file if line.strip()]
  if not lines:
    raise errors.ConfigError(f'prompts file {path} holds no prompt: write the prompts one a line')
  if not lines[0].startswith('{'):
    return lines
  prompts = []
  for number, line in enumerate(lines, 1):
    try:
      record = json.loads(line)
    except json.JSONDecodeError as error:
      raise errors.ConfigError(f'{path}, line {number}: not JSON ({error})') from None
    prompt = next((record[key] for key in PROMPT_KEYS if key in record), None) if isinstance(record, dict) else None
    if not isinstance(prompt, str):
      raise errors.ConfigError(f'{path}, line {number}: a JSONL prompt needs a string under one of {PROMPT_KEYS}')
    prompts.append(prompt)
  return prompts


def time_ids(image_size) -> np.ndarray:
  """float32 [6]: SDXL's (original height, width, crop top, left, target height, width) of an uncropped image of
  `image_size`, (height, width) or one side of a square, in pixels."""
  height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
  return np.array([height, width, 0, 0, height, width], np.float32)


def encode_prompts(encoders: Sequence, prompts: Sequence[str], image_size: tuple | None = None) -> dict:
  """The text condition of `prompts` (numpy float32): {'tokens' [B, L, D]}, plus 'pooled' [B, P] and 'time_ids'
  [B, 6] (of `image_size`, (height, width) in pixels) where the encoders give a pooled vector (SDXL)."""
  states, pooled = encode(encoders, list(prompts))
  condition = {'tokens': np.asarray(states, np.float32)}
  if pooled is not None:
    if image_size is None:
      raise ValueError("SDXL's condition holds the image's size (time_ids): give image_size=(height, width)")
    condition['pooled'] = np.asarray(pooled, np.float32)
    condition['time_ids'] = np.broadcast_to(time_ids(image_size), (len(prompts), 6)).copy()
  return condition


def zeros_for_empty_prompt(folder: str, condition: str) -> bool:
  """Whether the pipeline in `folder` guides against zeros rather than the empty prompt's encoding: its
  model_index.json's force_zeros_for_empty_prompt, else the pipeline class's default (true for SDXL's, which has the
  option; SD 1.5's pipeline has none)."""
  path = os.path.join(folder, MODEL_INDEX)
  default = condition == 'sdxl'
  if not os.path.isfile(path):
    return default
  try:
    with open(path) as file:
      index = json.load(file)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
    raise errors.ConfigError(f'{path} cannot be read as JSON ({error})') from None
  return bool(index.get('force_zeros_for_empty_prompt', default)) if default else False


def null_condition(encoders: Sequence, zeros: bool, image_size: tuple | None = None) -> dict:
  """The null condition as one row (no batch axis): the empty prompt's encoding, or zeros shaped like it (`zeros`);
  time_ids, where there are any, are the prompts' own."""
  empty = {key: value[0] for key, value in encode_prompts(encoders, [''], image_size).items()}
  if zeros:
    empty.update({key: np.zeros_like(value) for key, value in empty.items() if key != 'time_ids'})
  return empty


def pipeline_conditioning(folder: str, prompts: Sequence[str], image_size: tuple | None = None,
                          encoders: Sequence | None = None) -> Conditioning:
  """The text Conditioning of the diffusers pipeline in `folder`: `prompts` as its evaluation prompts, the
  pipeline's null (`null_condition`); image_size (height, width) in pixels, for SDXL's time_ids. `encoders`:
  the pipeline's TextEncoders, if already loaded."""
  encoders = encoders or load_pipeline(folder)
  zeros = zeros_for_empty_prompt(folder, encoders[0].condition)
  return Conditioning('text', null_text=null_condition(encoders, zeros, image_size),
                      prompts=encode_prompts(encoders, prompts, image_size))

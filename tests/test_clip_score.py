"""The 'clip_score' evaluator (eval/clip_score.py): a transformers CLIPModel folder read for both towers and its
tokenizer, each sample scored against prompt i mod N, the same mean whatever the batches; clear errors."""
import dataclasses
import json
import os
import shutil
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from safetensors.numpy import save_file

from fewstep_jax.eval.clip_score import ClipScoreMetrics
from fewstep_jax.nn import clip_text, clip_vision
from fewstep_jax.text.tokenizer import CLIPTokenizer

TOKENIZER = os.path.join(os.path.dirname(__file__), 'data', 'clip_tokenizer', 'sd15_tokenizer')
PROMPTS = ['a thick seven', 'a thin, left-leaning one', 'a wide zero']


def _clip_folder(root) -> tuple:
  """A tiny CLIPModel folder: clip_vision.TINY's image tower, a text tower over the test tokenizer's vocabulary."""
  vocab = len(json.load(open(os.path.join(TOKENIZER, 'vocab.json'))))
  text = dataclasses.replace(clip_text.TINY, vocab_size=vocab, max_position_embeddings=77, eos_token_id=2,
                             projection_dim=clip_vision.TINY.projection_dim)
  vision = clip_vision.TINY
  os.makedirs(root)
  for name in os.listdir(TOKENIZER):
    shutil.copy(os.path.join(TOKENIZER, name), root)
  weights = {**clip_vision.random_weights(vision, seed=1), **clip_text.random_weights(text, seed=2)}
  save_file(weights, os.path.join(root, 'model.safetensors'))
  fields = lambda config: {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                           if f.name != 'projection_dim'}
  with open(os.path.join(root, 'config.json'), 'w') as f:
    json.dump({'architectures': ['CLIPModel'], 'projection_dim': vision.projection_dim,
               'vision_config': fields(vision), 'text_config': fields(text)}, f)
  return str(root), text, weights


def _run(folder, prompts=PROMPTS):
  config = ml_collections.ConfigDict({'eval': {'clip': folder}})
  mesh = jax.make_mesh((1, 1), ('data', 'fsdp'))
  return types.SimpleNamespace(config=config, data=types.SimpleNamespace(prompt_texts=lambda: prompts), mesh=mesh)


def test_the_score_is_each_sample_against_its_prompt_whatever_the_batches(tmp_path):
  folder, text_config, weights = _clip_folder(tmp_path / 'clip')
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(-1, 1, (5, 8, 8, 1)), jnp.float32)  # Grey, as the captioned digits.
  evaluator = ClipScoreMetrics(_run(folder), 5, seed=0)
  evaluator.start()
  evaluator.add(images[:3], None, 3)
  evaluator.add(jnp.concatenate([images[3:], images[:2]]), None, 2)  # A padded last batch.
  [(name, score, floor)] = evaluator.finish()

  vision_params = clip_vision.from_state_dict(weights, clip_vision.TINY)
  text_state = {k: v for k, v in weights.items() if k.startswith(('text_model.', 'text_projection.'))}
  text_params = clip_text.from_state_dict(text_state, text_config)
  ids = jnp.asarray(CLIPTokenizer.from_folder(folder)([PROMPTS[i % 3] for i in range(5)]), jnp.int32)

  @jax.jit
  def scores(vision_params, text_params, ids):
    pixels = clip_vision.preprocess(jnp.repeat((images + 1) / 2, 3, axis=-1), clip_vision.TINY.image_size)
    image_embeds = clip_vision.CLIPVisionEncoder(clip_vision.TINY).apply({'params': vision_params}, pixels)
    text_embeds = clip_text.CLIPTextEncoder(text_config).apply({'params': text_params}, ids).projected
    return clip_vision.clip_score(image_embeds, text_embeds)

  want = float(np.mean(scores(vision_params, text_params, ids)))
  assert name == 'clip_score_5' and floor is None
  np.testing.assert_allclose(score, want, rtol=1e-5)
  assert want > 0


def test_missing_settings_are_one_line(tmp_path):
  with pytest.raises(ValueError, match='set --config.eval.clip to a transformers CLIP model folder'):
    ClipScoreMetrics(_run(''), 4, seed=0)
  folder, _, _ = _clip_folder(tmp_path / 'clip')
  with pytest.raises(ValueError, match='needs the evaluation prompts as text: set --config.data.prompts_file'):
    ClipScoreMetrics(_run(folder, prompts=None), 4, seed=0)

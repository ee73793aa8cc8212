"""CLIP's image tower (nn/clip_vision.py) against transformers' outputs recorded by experiments/parity/clip_vision.py
--golden (a tiny CLIPModel on random weights), the CLIP score, preprocessing, and the loader's one-line errors."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fewstep_jax import errors
from fewstep_jax.nn import clip_text, clip_vision

GOLDEN = os.path.join(os.path.dirname(__file__), 'data', 'clip_vision_golden.npz')


def _golden():
  with np.load(GOLDEN) as stored:
    return {key: stored[key] for key in stored.files}


def test_the_image_tower_and_clip_score_are_transformers():
  golden = _golden()
  vision = {key[len('vision/'):]: value for key, value in golden.items() if key.startswith('vision/')}
  text = {key[len('text/'):]: value for key, value in golden.items() if key.startswith('text/')}
  params = clip_vision.from_state_dict(vision, clip_vision.TINY)
  image = jax.jit(clip_vision.CLIPVisionEncoder(clip_vision.TINY).apply)({'params': params}, golden['pixels'])
  np.testing.assert_allclose(image, golden['image_embeds'], rtol=1e-5, atol=1e-6)
  encoder = clip_text.CLIPTextEncoder(clip_text.TINY)
  text_embeds = encoder.apply({'params': clip_text.from_state_dict(text, clip_text.TINY)}, golden['ids']).projected
  np.testing.assert_allclose(text_embeds, golden['text_embeds'], rtol=1e-5, atol=1e-6)
  score = clip_vision.clip_score(image, text_embeds)
  np.testing.assert_allclose(score, golden['clip_score'], rtol=1e-5, atol=1e-5)
  assert float(jnp.max(score)) > 0  # The recorded pairs are not all clipped at 0.


def test_preprocess_crops_the_centre_and_normalises():
  rng = np.random.default_rng(0)
  square = jnp.asarray(rng.uniform(size=(1, 16, 16, 3)), jnp.float32)
  np.testing.assert_allclose(clip_vision.preprocess(square, 16),
                             (square - jnp.asarray(clip_vision.MEAN)) / jnp.asarray(clip_vision.STD), atol=1e-6)
  wide = jnp.zeros((2, 8, 24, 3)).at[:, :, 8:16].set(1.0)  # A white centre square in a black band.
  out = clip_vision.preprocess(wide, 8)
  assert out.shape == (2, 8, 8, 3)
  np.testing.assert_allclose(out[0, 4, 4], (1.0 - np.asarray(clip_vision.MEAN)) / np.asarray(clip_vision.STD),
                             atol=1e-5)


def test_a_file_without_the_image_tower_is_one_error_naming_what_is_missing():
  vision = clip_vision.random_weights(clip_vision.TINY)
  del vision['vision_model.post_layernorm.weight']
  with pytest.raises(errors.ConfigError, match=r"missing \['vision_model.post_layernorm.weight'\] \(1\)"):
    clip_vision.from_state_dict(vision, clip_vision.TINY, source='model.safetensors')
  with pytest.raises(errors.ConfigError, match='resize them first'):
    clip_vision.CLIPVisionEncoder(clip_vision.TINY).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))

"""The captioned digits (data 'digits_text'): attributes, captions, tokenizer, frozen text encoder, pipeline and the
caption metrics."""
import configparser
import fnmatch
import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from fewstep_jax.data import build_data, data_defaults
from fewstep_jax.data import digits_text
from fewstep_jax.errors import ConfigError
from fewstep_jax.eval import digits_eval, evaluate


def test_thresholds_are_the_terciles_of_the_training_split():
  images, _ = digits_text.split_arrays('train')
  measured = digits_text.measure(images)
  for name, words in digits_text.ATTRIBUTES.items():
    quantiles = np.quantile(measured[name], np.arange(1, len(words)) / len(words))
    np.testing.assert_allclose(digits_text.THRESHOLDS[name], quantiles, rtol=1e-6, atol=1e-7, err_msg=name)
    shares = np.bincount(digits_text.attribute_levels(images)[name], minlength=len(words)) / len(images)
    np.testing.assert_allclose(shares, 1 / len(words), atol=0.01, err_msg=name)  # Each word about equally often.


def test_attributes_are_measurable_on_imperfect_images():
  """A generated image is never exactly the data's: the words of test images survive mild noise."""
  images, _ = digits_text.split_arrays('test')
  noisy = np.clip(images + 0.1 * np.random.default_rng(0).standard_normal(images.shape), -1.0, 1.0)
  clean, measured = digits_text.attribute_levels(images), digits_text.attribute_levels(noisy)
  for name in digits_text.ATTRIBUTES:
    assert np.mean(clean[name] == measured[name]) > 0.9, name


def test_slant_and_width_have_the_sign_the_words_say():
  blank = -np.ones((1, 8, 8, 1), np.float32)
  rising = blank.copy()  # '/': the top row's ink to the right of the bottom row's.
  for row in range(8):
    rising[0, row, 7 - row, 0] = 1.0
  upright = blank.copy()
  upright[0, :, 3, 0] = 1.0
  wide = blank.copy()
  wide[0, :, [0, 7], 0] = 1.0
  measured = digits_text.measure(np.concatenate([rising, upright, wide, blank]))
  assert measured['slant'][0] > 0.9 and measured['slant'][1] == 0.0 and measured['mass'][3] == 0.0
  assert measured['width'][2] > measured['width'][1] == 0.0
  assert digits_text.Caption.of(7, 4, {'mass': 2, 'slant': 2, 'width': 0}).text == 'a thick, right-leaning seven'
  assert digits_text.Caption.of(8, 2, {'slant': 1}).text == 'an upright eight'


def test_the_shipped_tokenizer_is_the_generated_one_and_reads_each_caption_word_as_one_token():
  for name, contents in digits_text.tokenizer_files().items():
    with open(os.path.join(digits_text.TOKENIZER_DIR, name), encoding='utf-8') as file:
      assert file.read() == contents, f'{name}: rerun digits_text.write_tokenizer()'
  tokenizer = digits_text.tokenizer()
  by_id = {i: token for token, i in tokenizer.vocab.items()}
  for caption in digits_text.all_captions() + list(digits_text.evaluation_captions()):
    ids = tokenizer.encode(caption.text)
    assert len(ids) <= digits_text.CONTEXT_LENGTH  # Never truncated.
    words = [by_id[i] for i in ids[1:-1]]
    assert all(word.endswith('</w>') for word in words)  # One token a word.
    assert ' '.join(word[:-len('</w>')] for word in words) == caption.text.replace(',', ' ,').replace(
        ':', ' :').replace('-', ' - ')
  # An installed (non-editable) package carries the folder: setup.cfg's package data names its files.
  setup = configparser.ConfigParser()
  setup.read(REPO / 'setup.cfg')
  patterns = setup['options.package_data']['fewstep_jax'].split()
  for name in digits_text.tokenizer_files():
    path = f'data/digits_text_tokenizer/{name}'
    assert any(fnmatch.fnmatch(path, pattern) for pattern in patterns), path


def test_distinct_captions_have_distinct_encodings_and_the_empty_caption_is_the_null():
  texts = sorted({caption.text for caption in digits_text.all_captions()}) + ['']
  encoded = digits_text.encode(texts)
  assert encoded['tokens'].shape == (len(texts), 16, 64) and encoded['pooled'].shape == (len(texts), 64)
  assert encoded['tokens'].dtype == encoded['pooled'].dtype == encoded['time_ids'].dtype == np.float32
  # SDXL's size ids, which the 'digits' preset's text_time embedding reads beside the pooled caption: every digit
  # is 8x8, uncropped.
  np.testing.assert_array_equal(encoded['time_ids'], np.tile([8, 8, 0, 0, 8, 8], (len(texts), 1)))
  for name, ratio in (('pooled', 0.25), ('tokens', 0.15)):
    flat = encoded[name].reshape(len(texts), -1).astype(np.float64)
    squares = (flat ** 2).sum(1)
    distances = np.sqrt(np.maximum(squares[:, None] + squares[None] - 2 * flat @ flat.T, 0))
    distances = distances[np.triu_indices(len(texts), 1)]
    assert distances.min() > ratio * np.median(distances), name
  # The empty caption's encoding is the null, bit for bit, wherever it is encoded.
  null = jax.tree.map(np.asarray, _data().conditioning.null_text)
  for row in (encoded, digits_text.encode(['a seven'] * 70 + [''])):
    for name in ('tokens', 'pooled', 'time_ids'):
      np.testing.assert_array_equal(null[name], row[name][-1])


def test_the_pooled_output_is_whitened_over_the_captions():
  """The pooled vector the 'digits' preset's text_time term reads has unit variance over every caption and the
  empty one, so that the digit word's directions (1% of the raw vector's variance) are learnt as fast as the
  template's; the token states are the encoder's own."""
  texts = [caption.text for caption in digits_text.all_captions()] + ['']
  encoded = digits_text.encode(texts)
  pooled = encoded['pooled'].astype(np.float64)
  np.testing.assert_allclose(pooled.mean(0), 0.0, atol=1e-4)
  # Unit variance in every direction the captions span: all but the one that the encoder's final layer norm nearly
  # removes (its output sums to about a constant), which the projection's floor keeps from being amplified.
  values = np.linalg.eigvalsh(np.cov(pooled, rowvar=False))
  np.testing.assert_allclose(values[1:], 1.0, atol=2e-3)
  assert values[0] < 0.01
  ids = digits_text.tokenizer()(texts[:64])
  np.testing.assert_array_equal(encoded['tokens'][:64], digits_text._encoder()(jnp.asarray(ids))['tokens'])


def _config(**fields):
  config = data_defaults()
  config.name = 'digits_text'
  config.update(fields)
  return config


_PIPELINES = {}


def _data(batch_size: int = 16):
  if batch_size not in _PIPELINES:
    _PIPELINES[batch_size] = build_data(_config(), global_batch_size=batch_size, seed=0)
  return _PIPELINES[batch_size]


def test_batches_carry_one_of_each_images_captions_and_dropout_replaces_whole_rows():
  data = _data()
  assert (data.kind, data.data_shape, data.num_classes, data.evaluator) == ('host', (8, 8, 1), 0, 'digits_text')
  conditioning = data.conditioning
  assert conditioning.kind == 'text' and conditioning.prompts['tokens'].shape == (60, 16, 64)
  batch = data.next_batch()
  assert batch['x'].shape == (16, 8, 8, 1) and batch['y']['tokens'].shape == (16, 16, 64)
  assert batch['y']['pooled'].shape == (16, 64) and batch['y']['time_ids'].shape == (16, 6)
  # Each row's condition is one of its image's own captions (its digit and measured words).
  images, labels = digits_text.split_arrays('train')
  levels = digits_text.attribute_levels(batch['x'])
  for k, image in enumerate(batch['x']):
    label = labels[np.flatnonzero((images == image).all((1, 2, 3)))[0]]
    own = [data.table.rows[digits_text.Caption.of(label, t, {n: v[k] for n, v in levels.items()})]
           for t in range(len(digits_text.TEMPLATES))]
    assert any(np.array_equal(batch['y']['pooled'][k], data.table.encodings['pooled'][row]) for row in own)

  dropped = conditioning.drop(jax.random.key(0), jax.tree.map(np.asarray, batch['y']), 0.5)
  null = conditioning.null(batch['y'])
  for k in range(16):
    is_null = [np.array_equal(dropped[n][k], null[n][k]) for n in ('tokens', 'pooled')]
    kept = [np.array_equal(dropped[n][k], batch['y'][n][k]) for n in ('tokens', 'pooled')]
    assert (all(is_null) and not any(kept)) or (all(kept) and not any(is_null))
  assert 0 < int(np.sum(~np.asarray(conditioning.is_conditional(dropped)))) < 16


def test_a_resumed_pipeline_draws_the_same_captions_and_unconditional_runs_drop_them():
  data = build_data(_config(), global_batch_size=8, seed=3)
  data.next_batch()
  state = json.loads(json.dumps(data.get_state()))
  want = data.next_batch()
  resumed = build_data(_config(), global_batch_size=8, seed=3)
  resumed.set_state(state)
  got = resumed.next_batch()
  np.testing.assert_array_equal(want['x'], got['x'])
  np.testing.assert_array_equal(want['y']['tokens'], got['y']['tokens'])
  with pytest.raises(ConfigError, match='captions_drawn'):
    resumed.set_state({key: value for key, value in state.items() if key != 'captions_drawn'})

  plain = build_data(_config(conditional=False), global_batch_size=8, seed=3)
  assert plain.conditioning.kind == 'none' and set(plain.next_batch()) == {'x'}
  with pytest.raises(ConfigError, match='image_size'):
    build_data(_config(image_size=16), global_batch_size=8, seed=3)


def test_caption_scores_reach_their_reference_on_real_images_and_drop_on_wrong_captions():
  evaluator = digits_eval.DigitsEvaluator()
  images, labels = digits_text.split_arrays('test')
  captions = digits_text.own_captions(images, labels)
  real = digits_eval.caption_scores(evaluator, images, captions)
  assert real == pytest.approx(digits_eval.real_caption_scores(evaluator))
  assert real['attribute_agreement'] == 1.0 and real['caption_accuracy'] > 0.95
  wrong = digits_eval.caption_scores(evaluator, images, captions[1:] + captions[:1])
  assert wrong['caption_accuracy'] < 0.3 and wrong['attribute_agreement'] < 0.6
  # An attribute a caption does not name is not scored: a caption naming none leaves the agreement undefined.
  bare = [digits_text.Caption.of(c.digit, 0, {}) for c in captions]
  assert np.isnan(digits_eval.caption_scores(evaluator, images, bare)['attribute_agreement'])


def test_the_evaluator_scores_sample_i_against_prompt_i_mod_n():
  data = _data()
  run = types.SimpleNamespace(data=data, method=types.SimpleNamespace(conditioning=data.conditioning))
  assert evaluate.metric_names(types.SimpleNamespace(eval=types.SimpleNamespace(metrics=())), data) == (
      'digits_text',)
  with pytest.raises(ConfigError, match="use 'digits'"):
    evaluate.metric_names(types.SimpleNamespace(eval=types.SimpleNamespace(metrics=('digits_text',))),
                          types.SimpleNamespace(evaluator='digits'))
  metrics = evaluate.DigitsTextMetrics(run, 120, 0)
  # Real test images that fit prompt i mod 60 stand in for a perfect generator's samples.
  images, labels = digits_text.split_arrays('test')
  levels = digits_text.attribute_levels(images)
  fitting = []
  for caption in digits_text.evaluation_captions() * 2:
    matches = np.flatnonzero((labels == caption.digit) & np.all([levels[n] == v for n, v in caption.levels], 0))
    fitting.append(matches[len(fitting) % len(matches)] if len(matches) else np.flatnonzero(labels == caption.digit)[0])
  samples = images[fitting]
  metrics.start()
  for start in (0, 64):  # Two batches, as generate_batches hands them over.
    conditions = data.conditioning.for_samples(np.arange(start, start + 64))
    metrics.add(samples[start:start + 64] if start == 0 else np.concatenate([samples[64:], samples[:8]]),
                conditions, 64 if start == 0 else 56)
  rows = {name: (value, reference) for name, value, reference in metrics.finish()}
  # The plain digits metrics on these samples: no class accuracy, as their conditions are captions, not labels.
  assert [row[0] for row in evaluate.DigitsMetrics(run, 120, 0).rows(samples, conditions)] == ['frechet_digits']
  assert list(rows) == ['frechet_digits', 'caption_accuracy', 'attribute_agreement']
  assert rows['attribute_agreement'][1] == 1.0 and rows['caption_accuracy'][1] > 0.95
  assert rows['caption_accuracy'][0] > 0.9 and rows['attribute_agreement'][0] > 0.9
  metrics.start()
  metrics.add(samples[:64], data.conditioning.for_samples(np.arange(1, 65)), 64)  # Conditions out of order.
  with pytest.raises(RuntimeError, match='evaluation prompts'):
    metrics.finish()

  # data.conditional=False: an unconditional model of the digits, scored by its Frechet distance alone.
  plain = build_data(_config(conditional=False), global_batch_size=8, seed=0)
  unconditional = types.SimpleNamespace(data=plain, method=types.SimpleNamespace(conditioning=plain.conditioning))
  assert evaluate.metric_names(types.SimpleNamespace(eval=types.SimpleNamespace(metrics=())), plain) == (
      'digits_text',)
  assert [row[0] for row in evaluate.DigitsTextMetrics(unconditional, 64, 0).rows(samples[:64], None)] == [
      'frechet_digits']

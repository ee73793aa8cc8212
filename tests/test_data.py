"""Tests of fewstep_jax.data: toy samplers, the digits TFDS dataset, TFDS image datasets, the grain pipeline."""
import concurrent.futures
import json
import math
import os

import grain.python as grain
import jax
import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from fewstep_jax.data import build_data, data_defaults, data_dir, default_data_dir
from fewstep_jax.data.digits import DIGITS_NAME, ensure_digits
from fewstep_jax.data.digits_arrays import load_digits_arrays, to_model_range
from fewstep_jax.data.pipeline import BatchIterator, PermutationBatches, choose_reader
from fewstep_jax.data.tfds_images import DatasetNotPreparedError
from fewstep_jax.data.toy import TOY_SAMPLERS, sample_toy

# ---------------------------------------------------------------------------------------------------- toy


@pytest.mark.parametrize('name', sorted(TOY_SAMPLERS))
def test_toy_sampler_is_standardised(name):
  points = np.asarray(sample_toy(name, jax.random.key(0), 200_000))
  assert points.shape == (200_000, 2) and points.dtype == np.float32
  assert np.isfinite(points).all()
  # Sampling error of the mean is ~0.002 here; the spirals' per-coordinate std is 1 -+ 0.02 by construction.
  np.testing.assert_allclose(points.mean(axis=0), 0.0, atol=0.02)
  np.testing.assert_allclose(points.std(axis=0), 1.0, atol=0.03)


def test_eight_gaussians_modes_sit_on_the_scaled_circle():
  points = np.asarray(sample_toy('8gaussians', jax.random.key(1), 100_000))
  scale = 1.0 / math.sqrt(0.5 + 0.1**2)
  angles = np.arctan2(points[:, 1], points[:, 0])
  modes = np.round(angles / (2 * np.pi / 8)) % 8
  assert np.all(np.abs(np.bincount(modes.astype(int), minlength=8) / len(points) - 1 / 8) < 0.01)
  # |centre + 0.1 eps| has mean ~ 1 + 0.1^2 / 2 in raw units.
  np.testing.assert_allclose(np.linalg.norm(points, axis=1).mean(), scale * (1 + 0.005), rtol=0.01)


def test_checkerboard_lies_on_dark_cells():
  points = np.asarray(sample_toy('checkerboard', jax.random.key(2), 10_000))
  cells = np.floor(points / (math.sqrt(3.0) / 2.0) + 2.0).astype(int)
  assert cells.min() >= 0 and cells.max() <= 3
  assert np.all(cells.sum(axis=1) % 2 == 0)


@pytest.mark.parametrize('name', sorted(TOY_SAMPLERS))
def test_toy_sampler_jits_and_is_deterministic_per_key(name):
  sample = jax.jit(sample_toy, static_argnums=(0, 2))
  first = sample(name, jax.random.key(3), 64)
  np.testing.assert_array_equal(first, sample(name, jax.random.key(3), 64))
  np.testing.assert_allclose(first, sample_toy(name, jax.random.key(3), 64), atol=1e-5)
  assert not np.allclose(first, sample(name, jax.random.key(4), 64))


def test_unknown_toy_name_lists_the_names():
  with pytest.raises(ValueError, match='checkerboard'):
    sample_toy('swissroll', jax.random.key(0), 4)


def test_toy_data_pipeline():
  data = build_data(data_defaults(), global_batch_size=16, seed=0)
  assert (data.kind, data.data_shape, data.num_classes) == ('device', (2,), 0)
  batch = jax.jit(data.device_sample, static_argnums=1)(jax.random.key(0), 16)
  assert set(batch) == {'x'} and batch['x'].shape == (16, 2)
  reference = data.reference_samples(1000, 'test', seed=7)
  assert isinstance(reference['x'], np.ndarray) and reference['x'].shape == (1000, 2)
  np.testing.assert_array_equal(reference['x'], data.reference_samples(1000, 'test', seed=7)['x'])
  assert data.get_state() == {}
  with pytest.raises(TypeError):
    data.next_batch()


def test_unknown_dataset_kind():
  config = data_defaults()
  config.name = 'mnist'
  with pytest.raises(ValueError, match='digits'):
    build_data(config, global_batch_size=8, seed=0)


# ------------------------------------------------------------------------------------------------- digits


@pytest.fixture(scope='module')
def digits_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('digits_data')
  ensure_digits(data_dir)
  return data_dir


@pytest.mark.parametrize('split, size', [('train', 1437), ('test', 360)])
def test_digits_reads_back_exactly(digits_dir, split, size):
  source = tfds.data_source(DIGITS_NAME, split=split, data_dir=digits_dir, download=False)
  assert len(source) == size
  records = source.__getitems__(list(range(size)))
  images, labels = load_digits_arrays(split)
  np.testing.assert_array_equal(np.stack([record['image'] for record in records]), images)
  np.testing.assert_array_equal([record['label'] for record in records], labels)


def test_digits_build_is_idempotent_and_leaves_no_scratch(digits_dir):
  version_dir = digits_dir / DIGITS_NAME / '1.0.0'
  files = sorted(version_dir.iterdir())
  mtimes = [path.stat().st_mtime_ns for path in files]
  ensure_digits(digits_dir)
  assert sorted(version_dir.iterdir()) == files
  assert [path.stat().st_mtime_ns for path in files] == mtimes
  assert sorted(path.name for path in (digits_dir / DIGITS_NAME).iterdir()) == ['1.0.0']
  assert sorted(path.name for path in digits_dir.iterdir()) == [DIGITS_NAME]


def _digits_config(data_dir):
  config = data_defaults()
  config.name = 'digits'
  config.dir = str(data_dir)
  return config


def test_data_dir_defaults_to_a_cache_directory_never_the_current_one(digits_dir, tmp_path, monkeypatch):
  """An empty data.dir is $FEWSTEP_JAX_DATA, else ~/.cache/fewstep_jax/data: a run started anywhere writes no data/
  folder there (in a clone's root, one could shadow the package for a script run from its parent)."""
  assert data_defaults().dir == ''
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv('FEWSTEP_JAX_DATA', str(digits_dir))
  assert build_data(_digits_config(''), global_batch_size=8, seed=0).num_classes == 10
  assert os.listdir(tmp_path) == []
  monkeypatch.delenv('FEWSTEP_JAX_DATA')
  monkeypatch.setenv('HOME', str(tmp_path))
  assert data_dir(data_defaults()) == str(tmp_path / '.cache' / 'fewstep_jax' / 'data')
  assert data_dir(_digits_config('~/mine')) == str(tmp_path / 'mine')


def test_the_test_session_builds_no_data_in_the_home_cache():
  assert default_data_dir() != os.path.join(os.path.expanduser('~'), '.cache', 'fewstep_jax', 'data')


def test_digits_data_pipeline(digits_dir):
  data = build_data(_digits_config(digits_dir), global_batch_size=32, seed=0)
  assert (data.kind, data.data_shape, data.num_classes) == ('host', (8, 8, 1), 10)
  batch = data.next_batch()
  assert batch['x'].shape == (32, 8, 8, 1) and batch['x'].dtype == np.float32
  assert batch['y'].shape == (32,) and batch['y'].dtype == np.int32
  assert batch['x'].min() >= -1.0 and batch['x'].max() <= 1.0 and 0 <= batch['y'].min() <= batch['y'].max() <= 9
  # Every training image is one of the train split's images, converted to [-1, 1].
  train_images, _ = load_digits_arrays('train')
  train_set = {image.tobytes() for image in to_model_range(train_images)}
  assert all(image.tobytes() in train_set for image in batch['x'])

  # Capped at the split size, in the order of a seeded permutation.
  reference = data.reference_samples(1000, 'test', seed=3)
  test_images, test_labels = load_digits_arrays('test')
  order = np.random.default_rng(3).permutation(360)
  np.testing.assert_array_equal(reference['x'], to_model_range(test_images[order]))
  np.testing.assert_array_equal(reference['y'], test_labels[order])
  with pytest.raises(TypeError):
    data.device_sample(jax.random.key(0), 4)

  # data.conditional=False: the same images without labels, for unconditional models.
  config = _digits_config(digits_dir)
  config.conditional = False
  unlabelled = build_data(config, global_batch_size=32, seed=0)
  assert unlabelled.num_classes == 0 and unlabelled.data_shape == (8, 8, 1) and unlabelled.kind == 'host'
  assert unlabelled.conditioning.kind == 'none'  # Not the wrapped pipeline's labels.
  plain = unlabelled.next_batch()
  assert set(plain) == {'x'}
  np.testing.assert_array_equal(plain['x'], batch['x'])
  assert set(unlabelled.reference_samples(5, 'test', 3)) == {'x'}


def test_digits_data_state_resumes_in_a_new_pipeline(digits_dir):
  config = _digits_config(digits_dir)
  data = build_data(config, global_batch_size=64, seed=1)
  for _ in range(30):  # Past the end of the first epoch (1437 // 64 = 22 batches).
    data.next_batch()
  state = json.loads(json.dumps(data.get_state()))
  expected = [data.next_batch() for _ in range(3)]
  resumed = build_data(config, global_batch_size=64, seed=1)
  resumed.set_state(state)
  for want, got in zip(expected, [resumed.next_batch() for _ in range(3)]):
    np.testing.assert_array_equal(want['x'], got['x'])
    np.testing.assert_array_equal(want['y'], got['y'])


# ------------------------------------------------------------------------------------------ TFDS datasets

_TINY_TRAIN, _TINY_TEST = 12, 4
_COLOUR_STEP = 15  # 16 images x 15 stays within uint8.


def _constant_image(index):
  """uint8 [6, 6, 3] whose colour encodes `index`, so that decoding and resizing can be checked exactly."""
  return np.broadcast_to(np.array([index * _COLOUR_STEP, 255 - index * _COLOUR_STEP, 7], np.uint8), (6, 6, 3))


class FewstepTinyImages(tfds.core.GeneratorBasedBuilder):
  """A local stand-in for a TFDS image dataset: PNG images, labels and an unused text field."""

  VERSION = tfds.core.Version('1.0.0')
  code_path = None  # See fewstep_jax.data.digits.Digits8x8.

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(6, 6, 3)),
        'label': tfds.features.ClassLabel(num_classes=3),
        'id': tfds.features.Text(),
    }))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(0, _TINY_TRAIN),
            'test': self._generate_examples(_TINY_TRAIN, _TINY_TRAIN + _TINY_TEST)}

  def _generate_examples(self, start, stop):
    for index in range(start, stop):
      # PIL images, because the Image feature encodes numpy arrays with TensorFlow.
      yield index, {'image': PIL.Image.fromarray(_constant_image(index)), 'label': index % 3, 'id': f'{index}'}


@pytest.fixture(scope='module')
def tiny_tfds_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('tfds_data')
  FewstepTinyImages(data_dir=data_dir, file_format='array_record').download_and_prepare(
      download_dir=tmp_path_factory.mktemp('downloads'))
  return data_dir


def _tfds_config(name, data_dir, image_size=0):
  config = data_defaults()
  config.name = 'tfds'
  config.tfds_name = name
  config.dir = str(data_dir)
  config.image_size = image_size
  return config


def _decoded_indices(x):
  """Recovers the example indices from batches of _constant_image: x float32 [b, H, W, 3]."""
  colours = np.round((x + 1.0) * 127.5).astype(int)
  assert (colours == colours[:, :1, :1]).all()  # Still constant after decoding and resizing.
  indices = colours[:, 0, 0, 0] // _COLOUR_STEP
  np.testing.assert_array_equal(colours[:, 0, 0], [[i * _COLOUR_STEP, 255 - i * _COLOUR_STEP, 7] for i in indices])
  return indices


@pytest.mark.parametrize('image_size', [0, 3])
def test_tfds_images_pipeline(tiny_tfds_dir, image_size):
  data = build_data(_tfds_config('fewstep_tiny_images', tiny_tfds_dir, image_size), global_batch_size=4, seed=0)
  side = image_size or 6
  assert (data.kind, data.data_shape, data.num_classes) == ('host', (side, side, 3), 3)
  batch = data.next_batch()
  assert set(batch) == {'x', 'y'} and batch['x'].shape == (4, side, side, 3) and batch['x'].dtype == np.float32
  indices = _decoded_indices(batch['x'])
  assert indices.max() < _TINY_TRAIN
  np.testing.assert_array_equal(batch['y'], indices % 3)

  reference = data.reference_samples(100, 'test', seed=0)
  assert reference['x'].shape == (_TINY_TEST, side, side, 3)
  assert sorted(_decoded_indices(reference['x'])) == list(range(_TINY_TRAIN, _TINY_TRAIN + _TINY_TEST))


@pytest.mark.parametrize('name', ['cifar10', 'imagenet_resized/64x64', 'no_such_dataset'])
def test_missing_tfds_dataset_says_where_and_how(tmp_path, name):
  with pytest.raises(DatasetNotPreparedError) as error:
    build_data(_tfds_config(name, tmp_path), global_batch_size=4, seed=0)
  message = str(error.value)
  assert name in message and str(tmp_path) in message and 'tfds build' in message


def test_tfrecord_tfds_dataset_is_refused(tiny_tfds_dir, tmp_path):
  # A stand-in for `tfds build` without --file_format: same files, metadata saying tfrecord.
  copy = tmp_path / 'fewstep_tiny_images' / '1.0.0'
  copy.mkdir(parents=True)
  for path in (tiny_tfds_dir / 'fewstep_tiny_images' / '1.0.0').iterdir():
    text = path.read_bytes()
    if path.name == 'dataset_info.json':
      text = text.replace(b'"fileFormat": "array_record"', b'"fileFormat": "tfrecord"')
    (copy / path.name).write_bytes(text)
  with pytest.raises(DatasetNotPreparedError, match='--file_format=array_record'):
    build_data(_tfds_config('fewstep_tiny_images', tmp_path), global_batch_size=4, seed=0)


# ----------------------------------------------------------------------------------------------- pipeline

_NUM_RECORDS = 48


class IndexImages:
  """Random-access source: record i is a 2x2x1 image filled with i, label i % 10, and an unused field."""

  def __len__(self):
    return _NUM_RECORDS

  def __getitem__(self, index):
    return {'image': np.full((2, 2, 1), index, np.uint8), 'label': index % 10, 'name': f'record {index}'}

  def __repr__(self):  # grain checks the source's repr when restoring a state.
    return f'IndexImages({_NUM_RECORDS})'


def _indices(batch):
  return np.round((batch['x'][:, 0, 0, 0] + 1.0) * 127.5).astype(int)


def _batches(iterator, count):
  return [next(iterator) for _ in range(count)]


def _assert_same_batches(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a['x'], b['x'])
    np.testing.assert_array_equal(a['y'], b['y'])


def test_pipeline_batches_cover_each_epoch_once():
  iterator = BatchIterator(IndexImages(), global_batch_size=8, seed=0, shard_options=grain.ShardOptions(0, 1))
  batches = _batches(iterator, 12)  # Two epochs of 6 batches.
  for batch in batches:
    assert batch['x'].shape == (8, 2, 2, 1) and batch['x'].dtype == np.float32
    assert batch['y'].dtype == np.int32
    assert batch['x'].min() >= -1.0 and batch['x'].max() <= 1.0
    np.testing.assert_array_equal(batch['y'], _indices(batch) % 10)
  first_epoch = np.concatenate([_indices(batch) for batch in batches[:6]])
  second_epoch = np.concatenate([_indices(batch) for batch in batches[6:]])
  assert sorted(first_epoch) == list(range(_NUM_RECORDS)) == sorted(second_epoch)
  assert not np.array_equal(first_epoch, second_epoch)  # Reshuffled every epoch.
  assert not np.array_equal(first_epoch, np.arange(_NUM_RECORDS))


def test_pipeline_is_deterministic_per_seed():
  def first_batches(seed):
    return _batches(BatchIterator(IndexImages(), global_batch_size=8, seed=seed,
                                  shard_options=grain.ShardOptions(0, 1)), 4)
  _assert_same_batches(first_batches(5), first_batches(5))
  assert not np.array_equal(first_batches(5)[0]['x'], first_batches(6)[0]['x'])


@pytest.mark.parametrize('prefetch', [0, 3])
def test_pipeline_state_restores_exactly(prefetch):
  def make_iterator():
    return BatchIterator(IndexImages(), global_batch_size=8, seed=1, shard_options=grain.ShardOptions(0, 1),
                         prefetch=prefetch)
  iterator = make_iterator()
  _batches(iterator, 3)
  # Let the prefetch thread run ahead, so that a state of the loader rather than of the consumer would differ.
  concurrent.futures.wait(iterator._prefetcher._pending)  # pylint: disable=protected-access
  state = iterator.get_state()
  assert json.loads(json.dumps(state)) == state
  uninterrupted = _batches(iterator, 5)  # Crosses the epoch boundary after batch 6.
  iterator.set_state(state)
  _assert_same_batches(uninterrupted, _batches(iterator, 5))
  resumed = make_iterator()
  resumed.set_state(state)
  _assert_same_batches(uninterrupted, _batches(resumed, 5))


def test_pipeline_restore_refuses_another_seed():
  state = BatchIterator(IndexImages(), global_batch_size=8, seed=1,
                        shard_options=grain.ShardOptions(0, 1)).get_state()
  other = BatchIterator(IndexImages(), global_batch_size=8, seed=2, shard_options=grain.ShardOptions(0, 1))
  with pytest.raises(ValueError, match='Sampler'):
    other.set_state(state)


def test_pipeline_shards_processes_disjointly():
  shard_indices = []
  for process_index in range(2):
    iterator = BatchIterator(IndexImages(), global_batch_size=8, seed=0,
                             shard_options=grain.ShardOptions(process_index, 2, drop_remainder=True))
    batches = _batches(iterator, 6)  # One epoch of this process's 24 records, 4 per batch.
    assert all(batch['x'].shape == (4, 2, 2, 1) for batch in batches)
    shard_indices.append(np.concatenate([_indices(batch) for batch in batches]))
  assert len(set(shard_indices[0])) == len(set(shard_indices[1])) == _NUM_RECORDS // 2
  assert not set(shard_indices[0]) & set(shard_indices[1])


def test_pipeline_rejects_indivisible_global_batch():
  with pytest.raises(ValueError, match='divide'):
    BatchIterator(IndexImages(), global_batch_size=9, seed=0, shard_options=grain.ShardOptions(0, 2))


class IndexArrays(IndexImages):
  """IndexImages with the batched read of the permutation reader."""

  record_nbytes = 12

  def read_arrays(self, indices):
    return {'index': np.asarray(indices)}

  def read_batch(self, indices):
    return {'x': to_model_range(np.broadcast_to(np.asarray(indices, np.uint8)[:, None, None, None],
                                                (len(indices), 2, 2, 1))),
            'y': (np.asarray(indices) % 10).astype(np.int32)}


def _permutation_batches(seed=0, process_index=0, process_count=1, prefetch=2, batch=8):
  return PermutationBatches(IndexArrays(), global_batch_size=batch, seed=seed, process_index=process_index,
                            process_count=process_count, prefetch=prefetch)


def test_permutation_reader_covers_each_epoch_once_and_reshuffles():
  batches = _batches(_permutation_batches(), 12)  # Two epochs of 6 batches.
  for batch in batches:
    assert batch['x'].shape == (8, 2, 2, 1) and batch['x'].dtype == np.float32 and batch['y'].dtype == np.int32
    np.testing.assert_array_equal(batch['y'], _indices(batch) % 10)
  first_epoch = np.concatenate([_indices(batch) for batch in batches[:6]])
  second_epoch = np.concatenate([_indices(batch) for batch in batches[6:]])
  assert sorted(first_epoch) == list(range(_NUM_RECORDS)) == sorted(second_epoch)
  assert not np.array_equal(first_epoch, second_epoch)
  assert not np.array_equal(first_epoch, np.arange(_NUM_RECORDS))
  _assert_same_batches(batches[:4], _batches(_permutation_batches(), 4))  # Deterministic per seed.
  assert not np.array_equal(batches[0]['x'], next(_permutation_batches(seed=1))['x'])


@pytest.mark.parametrize('prefetch', [0, 3])
def test_permutation_reader_state_restores_exactly_across_epochs(prefetch):
  iterator = _permutation_batches(seed=1, prefetch=prefetch, batch=10)  # 48 records: batches straddle epochs.
  _batches(iterator, 3)
  concurrent.futures.wait(iterator._prefetcher._pending)  # pylint: disable=protected-access
  state = iterator.get_state()
  assert json.loads(json.dumps(state)) == state and state['epoch'] == 0 and state['offset'] == 30
  uninterrupted = _batches(iterator, 7)
  iterator.set_state(state)
  _assert_same_batches(uninterrupted, _batches(iterator, 7))
  resumed = _permutation_batches(seed=1, prefetch=prefetch, batch=10)
  resumed.set_state(state)
  _assert_same_batches(uninterrupted, _batches(resumed, 7))
  with pytest.raises(ValueError, match=r'seed=\(1, 2\)'):
    _permutation_batches(seed=2).set_state(state)
  with pytest.raises(ValueError, match="reader=grain"):
    _permutation_batches(seed=1).set_state(
        BatchIterator(IndexImages(), global_batch_size=8, seed=1, shard_options=grain.ShardOptions(0, 1)).get_state())
  with pytest.raises(ValueError, match="reader=memory"):
    BatchIterator(IndexImages(), global_batch_size=8, seed=1, shard_options=grain.ShardOptions(0, 1)).set_state(state)


def test_permutation_reader_gives_processes_disjoint_slices_that_change_every_epoch():
  epochs = []
  for process_index in range(2):
    batches = _batches(_permutation_batches(process_index=process_index, process_count=2), 12)  # 2 epochs of 24.
    assert all(batch['x'].shape == (4, 2, 2, 1) for batch in batches)
    epochs.append([set(np.concatenate([_indices(batch) for batch in batches[k:k + 6]])) for k in (0, 6)])
  for epoch in range(2):
    assert len(epochs[0][epoch]) == len(epochs[1][epoch]) == _NUM_RECORDS // 2
    assert not epochs[0][epoch] & epochs[1][epoch]
  assert epochs[0][0] != epochs[0][1]  # Not a fixed shard.


def test_reader_choice():
  config = data_defaults()
  assert config.reader == 'auto'
  assert choose_reader(config, IndexArrays()) == 'memory'
  config.memory_gib = 1e-9
  assert choose_reader(config, IndexArrays()) == 'stream'
  config.worker_count = 2
  assert choose_reader(config, IndexArrays()) == 'grain'
  assert choose_reader(data_defaults(), IndexImages()) == 'grain'  # No batched read.
  config.reader = 'memory'
  with pytest.raises(ValueError, match="reader='grain'"):
    choose_reader(config, IndexImages())
  config.reader = 'fast'
  with pytest.raises(ValueError, match='unknown data.reader'):
    choose_reader(config, IndexArrays())


def test_digits_readers_agree_and_old_grain_states_resume_under_auto(digits_dir):
  def pipeline(reader):
    config = _digits_config(digits_dir)
    config.reader = reader
    return build_data(config, global_batch_size=64, seed=3)
  def _take(data, count):
    return [data.next_batch() for _ in range(count)]
  memory, stream = pipeline('memory'), pipeline('stream')
  assert memory._batches.reader_name == 'memory' and stream._batches.reader_name == 'stream'  # pylint: disable=protected-access
  _assert_same_batches(_take(memory, 25), _take(stream, 25))  # Past the first epoch (22 batches).
  _take(stream, 3)
  state, want = memory.get_state(), _take(memory, 2)
  stream.set_state(state)  # A memory state resumes in a stream pipeline: the same permutation.
  _assert_same_batches(want, _take(stream, 2))
  # A checkpoint of the grain reader (every run before data.reader) resumes through grain under 'auto'.
  grain_run = pipeline('grain')
  _take(grain_run, 5)
  state, want = grain_run.get_state(), _take(grain_run, 3)
  auto = pipeline('auto')
  assert auto._batches.reader_name == 'memory'  # pylint: disable=protected-access
  auto.set_state(state)
  _assert_same_batches(want, _take(auto, 3))


def test_latents_directory_reads_scaled_latents_and_names_a_missing_one(tmp_path):
  latents = np.random.default_rng(0).normal(size=(20, 4, 4, 4)).astype(np.float16)
  np.save(tmp_path / 'latents.npy', latents)
  np.save(tmp_path / 'labels.npy', np.arange(20) % 5)
  config = data_defaults()
  config.name = 'latents'
  config.latents_dir = str(tmp_path)
  data = build_data(config, global_batch_size=4, seed=0)
  assert data.data_shape == (4, 4, 4) and data.num_classes == 5 and data.evaluator == ''
  assert (data.conditioning.kind, data.conditioning.num_classes) == ('label', 5)  # What the methods are built with.
  batch = data.next_batch()
  rows = [int(np.argmin(np.abs(latents.astype(np.float32) * 0.18215 - x).sum((1, 2, 3)))) for x in batch['x']]
  np.testing.assert_allclose(batch['x'], latents[rows].astype(np.float32) * 0.18215, rtol=1e-6)
  np.testing.assert_array_equal(batch['y'], np.array(rows) % 5)
  config.latents_dir = str(tmp_path / 'missing')
  with pytest.raises(FileNotFoundError, match='latents.npy'):
    build_data(config, global_batch_size=4, seed=0)

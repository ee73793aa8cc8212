"""Reflow couplings stored as a dataset: noise-sample pairs (eps, x̂) generated once from a trained flow
(`python -m fewstep_jax.tools.generate_pairs`) and read by the host pipeline (pipeline.make_batches) like any image dataset.

A pairs directory holds
  noise.npy    float32 [N, *data_shape]   the starting noise eps (flow time t = 1)
  data.npy     float32 [N, *data_shape]   the teacher's ODE solution x̂ from eps (t = 0)
  labels.npy   int32 [N]                  class labels the teacher was conditioned on (class-conditional only)
  info.json    teacher workdir, solver settings, data_shape, num_classes, count, and the teacher's data config
The arrays are memory-mapped, so N may exceed host memory. Batches are {'x': x̂, 'eps': eps, 'y': labels}.
"""
import json
import os

import jax
import numpy as np

from fewstep_jax.data.pipeline import HostBatches
from fewstep_jax.errors import ConfigError, InputNotFoundError

INFO = 'info.json'
ARRAYS = {'noise': 'noise.npy', 'data': 'data.npy', 'labels': 'labels.npy'}


def read_info(pairs_dir: str) -> dict:
  path = os.path.join(pairs_dir, INFO)
  if not pairs_dir or not os.path.exists(path):
    raise InputNotFoundError(
        f'no reflow pairs at {pairs_dir!r} ({INFO} missing). Generate them from a trained flow first: '
        f'python -m fewstep_jax.tools.generate_pairs --teacher=TEACHER_WORKDIR --out={pairs_dir or "PAIRS_DIR"} --num=N; '
        'then set --config.data.pairs_dir to that directory.')
  with open(path) as f:
    return json.load(f)


def load_pairs(pairs_dir: str, data_shape: tuple, num_classes: int) -> dict:
  """The stored pairs whole, {'noise', 'x'[, 'y']} numpy arrays, for a run on data of shape data_shape with
  num_classes labels (DMD's regression loss); a clear error if they were made for other data."""
  info = read_info(pairs_dir)
  if tuple(info['data_shape']) != tuple(data_shape) or info['num_classes'] != num_classes:
    raise ConfigError(f'method.regression_pairs={pairs_dir!r} holds data of shape {info["data_shape"]} with '
                      f'{info["num_classes"]} classes; this run has {tuple(data_shape)} and {num_classes}.')
  load = lambda name: np.load(os.path.join(pairs_dir, ARRAYS[name]))
  pairs = {'noise': load('noise'), 'x': load('data')}
  if num_classes:
    pairs['y'] = load('labels')
  return pairs


class PairSource:
  """Random access to the stored pairs: source[i] -> {'x', 'eps'[, 'label']} numpy arrays."""

  def __init__(self, pairs_dir: str):
    self.info = read_info(pairs_dir)
    self._noise = np.load(os.path.join(pairs_dir, ARRAYS['noise']), mmap_mode='r')
    self._data = np.load(os.path.join(pairs_dir, ARRAYS['data']), mmap_mode='r')
    labels_path = os.path.join(pairs_dir, ARRAYS['labels'])
    self._labels = np.load(labels_path, mmap_mode='r') if self.info['num_classes'] else None
    if not len(self._noise) == len(self._data) == self.info['count']:
      raise ConfigError(f'{pairs_dir}: noise, data and info.json disagree on the number of pairs; regenerate it')
    self.record_nbytes = self._data[0].nbytes + self._noise[0].nbytes + 8

  def __len__(self):
    return self.info['count']

  def __getitem__(self, index):
    record = {'x': np.asarray(self._data[index]), 'eps': np.asarray(self._noise[index])}
    if self._labels is not None:
      record['label'] = int(self._labels[index])
    return record

  def read_arrays(self, indices) -> dict:
    arrays = {'x': np.asarray(self._data[indices], np.float32), 'eps': np.asarray(self._noise[indices], np.float32)}
    if self._labels is not None:
      arrays['label'] = np.asarray(self._labels[indices])
    return arrays


def pair_arrays_to_batch(arrays: dict) -> dict:
  batch = {'x': arrays['x'], 'eps': arrays['eps']}
  if 'label' in arrays:
    batch['y'] = arrays['label'].astype(np.int32)
  return batch


def stack_pairs(records) -> dict:
  batch = {'x': np.stack([r['x'] for r in records]).astype(np.float32),
           'eps': np.stack([r['eps'] for r in records]).astype(np.float32)}
  if 'label' in records[0]:
    batch['y'] = np.array([r['label'] for r in records], dtype=np.int32)
  return batch


def write_pairs(out_dir: str, noise, data, labels, info: dict) -> None:
  """Writes a pairs directory atomically: into out_dir.incomplete, renamed when complete."""
  if os.path.exists(out_dir):
    raise FileExistsError(f'{out_dir} exists; pairs are written once: remove it or choose another --out')
  partial = out_dir.rstrip('/') + '.incomplete'
  os.makedirs(partial, exist_ok=True)
  np.save(os.path.join(partial, ARRAYS['noise']), np.asarray(noise, np.float32))
  np.save(os.path.join(partial, ARRAYS['data']), np.asarray(data, np.float32))
  if labels is not None:
    np.save(os.path.join(partial, ARRAYS['labels']), np.asarray(labels, np.int32))
  with open(os.path.join(partial, INFO), 'w') as f:
    json.dump(dict(info, count=int(len(noise))), f, indent=2)
  os.rename(partial, out_dir)


class PairData(HostBatches):
  """The DataPipeline of a pairs directory (kind 'host'). Reference samples and the evaluator are those of
  the dataset the teacher was trained on, so metrics compare with real data, not with the teacher."""


  def __init__(self, config_data, *, global_batch_size: int, seed: int, build_source_data):
    source = PairSource(config_data.pairs_dir)
    self.info = source.info
    self.data_shape = tuple(self.info['data_shape'])
    self.num_classes = self.info['num_classes']
    self.evaluator = self.info['source_data']['name']
    self._build_source_data = build_source_data
    self._source_data = None
    self._open_batches(source, config_data, global_batch_size=global_batch_size, seed=seed,
                       record_batch_fn=stack_pairs, arrays_batch_fn=pair_arrays_to_batch)

  def reference_samples(self, n: int, split: str, seed: int) -> dict:
    if self._source_data is None:
      self._source_data = self._build_source_data(self.info['source_data'], jax.process_count())
    return self._source_data.reference_samples(n, split, seed)

"""Precomputed VAE latents as a dataset (ImageNet-256 latent configs): `config.data.latents_dir` holds

  latents.npy   float16 / float32 [N, H, W, C]   VAE posterior means of the training images (e.g. SD-VAE:
                                                  [N, 32, 32, 4] for 256x256 images), unscaled
  labels.npy    int [N]                           class labels (absent: unconditional)
  info.json     optional {"num_classes": 1000, ...}; without it num_classes = max(label) + 1

memory-mapped (N may exceed host memory) and read by the grain pipeline. Batches are
{'x': latent_scale * latents, 'y': labels}; latent_scale is 0.18215 for SD-VAE. The latents are made once by the
user's VAE encoder, outside this codebase (no VAE weights ship here); MeanFlow's reference samples from the
stored posterior mean and std each time, we read the mean only.
"""
import json
import os

import numpy as np

from fewstep_jax.data.pipeline import BatchIterator, HostBatches


def _missing(directory: str) -> str:
  return (f'no latents at data.latents_dir={directory!r}: expected latents.npy [N, H, W, C] (and labels.npy [N] '
          'for class-conditional training) written by your VAE encoder; set --config.data.latents_dir to that '
          'directory.')


class LatentSource:
  """source[i] -> {'x': float32 [H, W, C] scaled, 'label': int}."""

  def __init__(self, directory: str, scale: float):
    path = os.path.join(directory, 'latents.npy')
    if not directory or not os.path.exists(path):
      raise FileNotFoundError(_missing(directory))
    self._latents = np.load(path, mmap_mode='r')
    labels_path = os.path.join(directory, 'labels.npy')
    self._labels = np.load(labels_path, mmap_mode='r') if os.path.exists(labels_path) else None
    if self._labels is not None and len(self._labels) != len(self._latents):
      raise ValueError(f'{directory}: latents.npy has {len(self._latents)} rows but labels.npy {len(self._labels)}')
    info_path = os.path.join(directory, 'info.json')
    info = json.load(open(info_path)) if os.path.exists(info_path) else {}
    if self._labels is None:
      self.num_classes = 0
    else:
      self.num_classes = int(info.get('num_classes', int(np.max(self._labels)) + 1))
    self.scale = scale
    self.shape = tuple(self._latents.shape[1:])

  def __len__(self):
    return len(self._latents)

  def __getitem__(self, index):
    record = {'x': np.asarray(self._latents[index], np.float32) * self.scale}
    if self._labels is not None:
      record['label'] = int(self._labels[index])
    return record


def stack_latents(records) -> dict:
  batch = {'x': np.stack([r['x'] for r in records])}
  if 'label' in records[0]:
    batch['y'] = np.array([r['label'] for r in records], dtype=np.int32)
  return batch


class LatentData(HostBatches):
  """DataPipeline of a latents directory (kind 'host'); no embedded evaluator (FID needs the VAE decoder)."""

  evaluator = ''

  def __init__(self, config_data, *, global_batch_size: int, seed: int):
    self._source = LatentSource(config_data.latents_dir, config_data.latent_scale)
    self.data_shape, self.num_classes = self._source.shape, self._source.num_classes
    self._batches = BatchIterator(self._source, global_batch_size=global_batch_size, seed=seed,
                                  batch_fn=stack_latents, worker_count=config_data.worker_count,
                                  prefetch=config_data.prefetch)

  def reference_samples(self, n: int, split: str, seed: int) -> dict:
    """The first n latents of a seed-permutation (there is one split: `split` is ignored)."""
    del split
    indices = np.random.default_rng(seed).permutation(len(self._source))[:n]
    return stack_latents([self._source[int(i)] for i in indices])

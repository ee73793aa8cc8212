"""Precomputed VAE latents as a dataset (ImageNet-256 latent configs). `config.data.latents_dir` holds either

  posterior moments, as `python -m fewstep_jax.tools.encode_latents` writes them (fewstep_jax/tools/encode_latents.py):
    info.json                         {"format": "moments", "shape": [H, W, C], "num_examples", "num_classes", ...}
    moments-<shard>.array_record      one record per image: int32 label, float32 mean [H, W, C], float32 std

  or posterior means only, from any encoder:
    latents.npy   float16 / float32 [N, H, W, C]   VAE posterior means (e.g. SD-VAE: [N, 32, 32, 4]), unscaled
    labels.npy    int [N]                           class labels (absent: unconditional)
    info.json     optional {"num_classes": 1000, ...}; without it num_classes = max(label) + 1

read by the host pipeline (pipeline.make_batches: memory-mapped or batched array_record reads, so N may exceed
host memory; held in memory when it fits data.memory_gib). Host batches are
{'x': scale * mean + shift, 'y': labels}, plus 'x_std': scale * std for moments; then on the device, each step,
`on_device` draws x = scale * (mean + std * eps) + shift from the step's key, as MeanFlow's reference samples its
stored moments. `data.latent_norm` chooses (scale, shift) (LATENT_NORMS): 'scale' is data.latent_scale (0.18215
for SD-VAE) and no shift, for latents of images in [-1, 1] (DiT, SiT, MeanFlow); 'edm2' is EDM2's
StabilityVAEEncoder (its training/encoders.py): per channel (raw - raw_mean) * 0.5 / raw_std, for latents of images
in [0, 1], as EDM2 encodes them (`encode_latents --pixels=unit`), which its ImageNet-512 networks were trained on.
"""
import dataclasses
import json
import os

import numpy as np

from fewstep_jax.errors import ConfigError, InputNotFoundError


@dataclasses.dataclass(frozen=True)
class LatentNorm:
  """Final latents = scale * raw + shift (per channel or scalar); `pixels`: the range of the images the VAE
  encoded, 'signed' ([-1, 1]) or 'unit' ([0, 1])."""
  scale: np.ndarray
  shift: np.ndarray
  pixels: str


# EDM2's StabilityVAEEncoder defaults: the raw latents' assumed channel means and stds, mapped to mean 0, std 0.5.
EDM2_RAW_MEAN = np.array([5.81, 3.25, 0.12, -2.15], np.float32)
EDM2_RAW_STD = np.array([4.17, 4.62, 3.71, 3.28], np.float32)

EDM2_FINAL_STD = np.float32(0.5)


def _edm2_norm(config_data) -> LatentNorm:
  del config_data
  scale = EDM2_FINAL_STD / EDM2_RAW_STD
  return LatentNorm(scale, -EDM2_RAW_MEAN * scale, 'unit')


LATENT_NORMS = {
    'scale': lambda config_data: LatentNorm(np.float32(config_data.latent_scale), np.float32(0.0), 'signed'),
    'edm2': _edm2_norm,
}


def latent_norm(config_data) -> LatentNorm:
  """The LatentNorm config_data.latent_norm names ('scale' when the field is absent: runs written before it)."""
  name = config_data.get('latent_norm', 'scale')
  if name not in LATENT_NORMS:
    raise ConfigError(f'unknown data.latent_norm {name!r}; known: {sorted(LATENT_NORMS)}')
  return LATENT_NORMS[name](config_data)

from fewstep_jax.data.pipeline import HostBatches


def _missing(directory: str) -> str:
  return (f'no latents at data.latents_dir={directory!r}: expected latents.npy [N, H, W, C] (and labels.npy [N] '
          'for class-conditional training) written by your VAE encoder; set --config.data.latents_dir to that '
          'directory.')


MOMENTS_FORMAT = 'moments'


def moments_record(mean: np.ndarray, std: np.ndarray, label: int) -> bytes:
  """One image's record: int32 label, then float32 mean and std [H, W, C]."""
  return (np.int32(label).tobytes() + np.ascontiguousarray(mean, np.float32).tobytes()
          + np.ascontiguousarray(std, np.float32).tobytes())


def read_moments_record(record: bytes, shape) -> tuple:
  """(mean, std, label) of a record of `moments_record`."""
  size = int(np.prod(shape))
  values = np.frombuffer(record, np.float32, count=2 * size, offset=4)
  return values[:size].reshape(shape), values[size:].reshape(shape), int(np.frombuffer(record, np.int32, count=1)[0])


def shard_paths(directory: str, num_shards: int) -> list:
  return [os.path.join(directory, f'moments-{i:05d}-of-{num_shards:05d}.array_record') for i in range(num_shards)]


class MomentsSource:
  """source[i] -> {'x': scale * mean + shift, 'x_std': scale * std, 'label': int}, from encode_latents' shards."""

  def __init__(self, directory: str, norm: LatentNorm, info: dict):
    import grain.python as grain
    paths = shard_paths(directory, int(info['num_shards']))
    missing = [path for path in paths if not os.path.exists(path)]
    if missing:
      raise InputNotFoundError(f'{directory} is incomplete: {len(missing)} of {len(paths)} shards are missing (first: '
                               f'{missing[0]}); run python -m fewstep_jax.tools.encode_latents again with the same --out '
                               'to finish it')
    self._records = grain.ArrayRecordDataSource(paths)
    if len(self._records) != int(info['num_examples']):
      raise ConfigError(f'{directory}: the shards hold {len(self._records)} records, info.json says '
                        f'{info["num_examples"]}; the dataset is damaged: encode it again')
    pixels = info.get('pixels', 'signed')
    if pixels != norm.pixels:
      raise ConfigError(f'{directory} holds latents of images in {PIXEL_RANGES[pixels]}, but data.latent_norm expects '
                        f'images in {PIXEL_RANGES[norm.pixels]}: encode again with --pixels={norm.pixels}, or set '
                        f'--config.data.latent_norm={"edm2" if pixels == "unit" else "scale"}')
    self.shape, self.norm = tuple(info['shape']), norm
    self.num_classes = int(info.get('num_classes', 0))
    self._record_dtype = np.dtype([('label', '<i4'), ('mean', '<f4', self.shape), ('std', '<f4', self.shape)])
    self.record_nbytes = self._record_dtype.itemsize

  def __len__(self):
    return len(self._records)

  def __getitem__(self, index):
    mean, std, label = read_moments_record(self._records[index], self.shape)
    record = {'x': mean * self.norm.scale + self.norm.shift, 'x_std': std * self.norm.scale}
    if self.num_classes:
      record['label'] = label
    return record

  def read_arrays(self, indices) -> dict:
    """The records at `indices` in one batched read, decoded together: {'x', 'x_std'[, 'label']} arrays."""
    raw = self._records.__getitems__([int(index) for index in indices])
    records = np.frombuffer(b''.join(raw), self._record_dtype)
    arrays = {'x': records['mean'] * self.norm.scale + self.norm.shift, 'x_std': records['std'] * self.norm.scale}
    if self.num_classes:
      arrays['label'] = records['label']
    return arrays


# encode_latents' --pixels: the range the images are mapped to before the VAE.
PIXEL_RANGES = {'signed': '[-1, 1]', 'unit': '[0, 1]'}


def open_source(directory: str, norm: LatentNorm):
  """The latents directory's source: MomentsSource for encode_latents' output, LatentSource for latents.npy."""
  info_path = os.path.join(directory, 'info.json') if directory else ''
  info = json.load(open(info_path)) if info_path and os.path.exists(info_path) else {}
  if info.get('format') == MOMENTS_FORMAT:
    return MomentsSource(directory, norm, info)
  return LatentSource(directory, norm)


class LatentSource:
  """source[i] -> {'x': float32 [H, W, C] normalised (scale * mean + shift), 'label': int}."""

  def __init__(self, directory: str, norm: LatentNorm):
    path = os.path.join(directory, 'latents.npy')
    if not directory or not os.path.exists(path):
      raise InputNotFoundError(_missing(directory))
    self._latents = np.load(path, mmap_mode='r')
    labels_path = os.path.join(directory, 'labels.npy')
    self._labels = np.load(labels_path, mmap_mode='r') if os.path.exists(labels_path) else None
    if self._labels is not None and len(self._labels) != len(self._latents):
      raise ConfigError(f'{directory}: latents.npy has {len(self._latents)} rows but labels.npy {len(self._labels)}')
    info_path = os.path.join(directory, 'info.json')
    info = json.load(open(info_path)) if os.path.exists(info_path) else {}
    if self._labels is None:
      self.num_classes = 0
    else:
      self.num_classes = int(info.get('num_classes', int(np.max(self._labels)) + 1))
    self.norm = norm
    self.shape = tuple(self._latents.shape[1:])
    self.record_nbytes = 4 * int(np.prod(self.shape)) + 8

  def __len__(self):
    return len(self._latents)

  def __getitem__(self, index):
    record = {'x': np.asarray(self._latents[index], np.float32) * self.norm.scale + self.norm.shift}
    if self._labels is not None:
      record['label'] = int(self._labels[index])
    return record

  def read_arrays(self, indices) -> dict:
    arrays = {'x': np.asarray(self._latents[indices], np.float32) * self.norm.scale + self.norm.shift}
    if self._labels is not None:
      arrays['label'] = np.asarray(self._labels[indices])
    return arrays


def latent_arrays_to_batch(arrays: dict) -> dict:
  batch = {key: np.asarray(arrays[key], np.float32) for key in ('x', 'x_std') if key in arrays}
  if 'label' in arrays:
    batch['y'] = arrays['label'].astype(np.int32)
  return batch


def stack_latents(records) -> dict:
  batch = {'x': np.stack([r['x'] for r in records])}
  if 'x_std' in records[0]:
    batch['x_std'] = np.stack([r['x_std'] for r in records])
  if 'label' in records[0]:
    batch['y'] = np.array([r['label'] for r in records], dtype=np.int32)
  return batch


class LatentData(HostBatches):
  """DataPipeline of a latents directory (kind 'host'); no embedded evaluator (FID needs the VAE decoder)."""

  evaluator = ''

  def __init__(self, config_data, *, global_batch_size: int, seed: int):
    self._source = open_source(config_data.latents_dir, latent_norm(config_data))
    self.data_shape, self.num_classes = self._source.shape, self._source.num_classes
    self._open_batches(self._source, config_data, global_batch_size=global_batch_size, seed=seed,
                       record_batch_fn=stack_latents, arrays_batch_fn=latent_arrays_to_batch)

  @staticmethod
  def on_device(key, batch: dict) -> dict:
    """A posterior sample per latent, x = mean + std * eps, drawn on the device from the step's key (batches of
    posterior means pass unchanged)."""
    if 'x_std' not in batch:
      return batch
    import jax
    batch = dict(batch)
    std = batch.pop('x_std')
    batch['x'] = batch['x'] + std * jax.random.normal(key, batch['x'].shape, batch['x'].dtype)
    return batch

  def reference_samples(self, n: int, split: str, seed: int) -> dict:
    """The first n latents (posterior means) of a seed-permutation (there is one split: `split` is ignored)."""
    del split
    indices = np.random.default_rng(seed).permutation(len(self._source))[:n]
    batch = stack_latents([self._source[int(i)] for i in indices])
    batch.pop('x_std', None)
    return batch

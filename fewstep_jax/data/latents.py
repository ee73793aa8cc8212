"""Precomputed VAE latents as a dataset (ImageNet-256 latent configs). `config.data.latents_dir` holds either

  posterior moments, as `python -m fewstep_jax.tools.encode_latents` writes them (fewstep_jax/tools/encode_latents.py):
    info.json                         {"format": "moments", "shape": [H, W, C], "num_examples", "num_classes", ...}
    moments-<shard>.array_record      one record per image: int32 label, float32 mean [H, W, C], float32 std

  or, from an image-caption set or a prompt list (`encode_latents --text_encoders=...`), format 'captioned' (record
  version 2; readers before it refuse the directory, and this one refuses a later version in one line):
    info.json                         {"format": "captioned", "version": 2, "moments": bool, "text": {...}, ...}
    records-<shard>.array_record      one fixed-size record per image or prompt (`record_dtype(info)`): int32 label,
                                      int32 caption count K_i, [float32 mean, std [H, W, C]], [float32 time_ids [6]],
                                      tokens [K, L, D] (text.dtype; captions K_i..K-1 zero), [float32 pooled [K, P]];
                                      or, with text.storage 'ids', int32 token ids [K, encoders, 77] instead
    text_conditions.npz               the null condition and the evaluation prompts' conditions (`read_conditions`)

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

A captioned directory's batches carry text conditions: y = {'tokens': [b, L, D], 'pooled': [b, P] (SDXL),
'time_ids': [b, 6] (SDXL)}, one caption per image per step, drawn on the host by a generator seeded with (seed,
process, batches drawn), which the data state keeps (so a resumed run draws the same captions); the run's
Conditioning is 'text', its null and prompts from text_conditions.npz (or data.prompts_file, encoded at startup).
A directory without moments (a prompt list) gives batches with y alone: data-free methods train on it.
A directory of token ids needs data.text_encoding='on_the_fly': y then holds the drawn caption's 'ids', and
`on_device` runs the pipeline's encoders on them with `device_params()`, which the trainer passes to its jitted step.
"""
import dataclasses
import functools
import json
import os

import numpy as np

from fewstep_jax.conditions import Conditioning
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
CAPTIONED_FORMAT = 'captioned'
CAPTIONED_VERSION = 2  # Record layout version of CAPTIONED_FORMAT; a reader refuses any other.
FORMAT_VERSIONS = {MOMENTS_FORMAT: 1, CAPTIONED_FORMAT: CAPTIONED_VERSION}
SHARD_PREFIXES = {MOMENTS_FORMAT: 'moments', CAPTIONED_FORMAT: 'records'}
CONDITIONS_FILE = 'text_conditions.npz'
# Token-state storage dtypes (encode_latents --text_dtype): float16 halves float32's bytes and keeps CLIP's states
# (|x| < 100 here) to 11 significant bits; bfloat16 keeps float32's range at 8 bits.
TEXT_DTYPES = {'float16': np.float16, 'bfloat16': 'bfloat16', 'float32': np.float32}


# info['text']['storage'] -> the data.text_encoding that reads it: stored states, or token ids the step encodes.
TEXT_STORAGES = {'states': 'stored', 'ids': 'on_the_fly'}


def text_dtype(name: str) -> np.dtype:
  if name == 'bfloat16':
    import ml_dtypes
    return np.dtype(ml_dtypes.bfloat16)
  return np.dtype(TEXT_DTYPES[name])


def moments_record(mean: np.ndarray, std: np.ndarray, label: int) -> bytes:
  """One image's record (format 'moments'): int32 label, then float32 mean and std [H, W, C]."""
  return (np.int32(label).tobytes() + np.ascontiguousarray(mean, np.float32).tobytes()
          + np.ascontiguousarray(std, np.float32).tobytes())


def record_dtype(info: dict) -> np.dtype:
  """The numpy structured dtype of one record of a latents directory (either format; see the module docstring)."""
  fields = [('label', '<i4')]
  text = info.get('text')
  if text:
    fields.append(('count', '<i4'))
  if info.get('moments', True):
    shape = tuple(info['shape'])
    fields += [('mean', '<f4', shape), ('std', '<f4', shape)]
  if text:
    if text['time_ids']:
      fields.append(('time_ids', '<f4', (6,)))
    if text.get('storage', 'states') == 'ids':
      fields.append(('ids', '<i4', (text['max_captions'],) + tuple(text['ids_shape'])))
    else:
      fields.append(('tokens', text_dtype(text['dtype']), (text['max_captions'],) + tuple(text['tokens_shape'])))
      if text['pooled']:
        fields.append(('pooled', '<f4', (text['max_captions'], text['pooled'])))
  return np.dtype(fields)


CAPTION_ROWS = ('tokens', 'pooled', 'ids')  # A row per caption of the image: one is drawn per step.


def write_record(dtype: np.dtype, **fields) -> bytes:
  """One record of `dtype` from its fields; an image's captions fill the first rows of tokens/pooled (count)."""
  record = np.zeros((), dtype)
  for name, value in fields.items():
    value = np.asarray(value)
    if name in CAPTION_ROWS:
      record[name][:len(value)] = value
    else:
      record[name] = value
  return record.tobytes()


def read_moments_record(record: bytes, shape) -> tuple:
  """(mean, std, label) of a record of `moments_record`."""
  size = int(np.prod(shape))
  values = np.frombuffer(record, np.float32, count=2 * size, offset=4)
  return values[:size].reshape(shape), values[size:].reshape(shape), int(np.frombuffer(record, np.int32, count=1)[0])


def shard_paths(directory: str, num_shards: int, prefix: str = 'moments') -> list:
  return [os.path.join(directory, f'{prefix}-{i:05d}-of-{num_shards:05d}.array_record') for i in range(num_shards)]


def write_conditions(directory: str, conditions: dict):
  """text_conditions.npz: {'null': {'tokens': [L, D], ...}, 'prompts': {'tokens': [N, L, D], ...}} flattened to
  'null.tokens', ...; written to a temporary file and renamed."""
  flat = {f'{group}.{name}': np.asarray(value) for group, values in conditions.items() if values is not None
          for name, value in values.items()}
  temporary = os.path.join(directory, CONDITIONS_FILE + '.tmp.npz')
  np.savez(temporary, **flat)
  os.replace(temporary, os.path.join(directory, CONDITIONS_FILE))


def read_conditions(directory: str) -> dict:
  """{'null': {...}, 'prompts': {...} or None, 'texts': {'prompts': [str]} or None} of write_conditions, the arrays
  float32; 'texts' holds the evaluation prompts' text (encode_latents stores it since the CLIP score reads it)."""
  path = os.path.join(directory, CONDITIONS_FILE)
  if not os.path.exists(path):
    raise InputNotFoundError(f'{path} is missing: encode the directory again with encode_latents (it writes the null '
                             'condition there)')
  conditions = {'null': {}, 'prompts': {}, 'texts': {}}
  with np.load(path) as stored:
    for key in stored.files:
      group, name = key.split('.', 1)
      value = stored[key]
      conditions[group][name] = [str(text) for text in value] if group == 'texts' else value.astype(np.float32)
  return {group: values or None for group, values in conditions.items()}


def check_format(directory: str, info: dict):
  """A clear error for a directory written in a layout this reader does not know (a later version)."""
  name, version = info.get('format'), info.get('version', 1)
  if name in FORMAT_VERSIONS and FORMAT_VERSIONS[name] == version:
    return
  raise ConfigError(f'{directory} holds latents in format {name!r} version {version}, which this fewstep_jax does not '
                    f'read (it reads {FORMAT_VERSIONS}): update fewstep_jax, or encode the directory again with this '
                    'one')


class MomentsSource:
  """source[i] -> {'x': scale * mean + shift, 'x_std': scale * std, 'label': int} from encode_latents' shards, and
  for a captioned directory 'count', 'tokens' [K, L, D], 'pooled' [K, P], 'time_ids' [6] (no 'x' without moments)."""

  def __init__(self, directory: str, norm: LatentNorm, info: dict):
    import grain.python as grain
    check_format(directory, info)
    paths = shard_paths(directory, int(info['num_shards']), SHARD_PREFIXES[info['format']])
    missing = [path for path in paths if not os.path.exists(path)]
    if missing:
      raise InputNotFoundError(f'{directory} is incomplete: {len(missing)} of {len(paths)} shards are missing (first: '
                               f'{missing[0]}); run python -m fewstep_jax.tools.encode_latents again with the same --out '
                               'to finish it')
    self._records = grain.ArrayRecordDataSource(paths)
    if len(self._records) != int(info['num_examples']):
      raise ConfigError(f'{directory}: the shards hold {len(self._records)} records, info.json says '
                        f'{info["num_examples"]}; the dataset is damaged: encode it again')
    self.has_moments = info.get('moments', True)
    pixels = info.get('pixels', 'signed')
    if self.has_moments and pixels != norm.pixels:
      raise ConfigError(f'{directory} holds latents of images in {PIXEL_RANGES[pixels]}, but data.latent_norm expects '
                        f'images in {PIXEL_RANGES[norm.pixels]}: encode again with --pixels={norm.pixels}, or set '
                        f'--config.data.latent_norm={"edm2" if pixels == "unit" else "scale"}')
    self.shape, self.norm = tuple(info['shape']), norm
    self.num_classes = int(info.get('num_classes', 0))
    self.info, self._record_dtype = info, record_dtype(info)
    self.record_nbytes = self._record_dtype.itemsize

  def __len__(self):
    return len(self._records)

  def __getitem__(self, index):
    return {key: value[0] for key, value in self.read_arrays([index]).items()}

  def read_arrays(self, indices) -> dict:
    """The records at `indices` in one batched read, decoded together: {'x', 'x_std'[, 'label'], text fields}."""
    raw = self._records.__getitems__([int(index) for index in indices])
    records = np.frombuffer(b''.join(raw), self._record_dtype)
    arrays = {name: records[name] for name in ('count', 'time_ids') + CAPTION_ROWS
              if name in self._record_dtype.names}
    if self.has_moments:
      arrays.update(x=records['mean'] * self.norm.scale + self.norm.shift, x_std=records['std'] * self.norm.scale)
    if self.num_classes:
      arrays['label'] = records['label']
    return arrays


# encode_latents' --pixels: the range the images are mapped to before the VAE.
PIXEL_RANGES = {'signed': '[-1, 1]', 'unit': '[0, 1]'}


def open_source(directory: str, norm: LatentNorm):
  """The latents directory's source: MomentsSource for encode_latents' output, LatentSource for latents.npy."""
  info_path = os.path.join(directory, 'info.json') if directory else ''
  info = json.load(open(info_path)) if info_path and os.path.exists(info_path) else {}
  if 'format' in info:
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
    self.shape, self.info, self.has_moments = tuple(self._latents.shape[1:]), info, True
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


CAPTION_FIELDS = ('count',) + CAPTION_ROWS


def sample_moments(key, batch: dict) -> dict:
  """On the device: x = mean + std * eps for a batch of posterior moments ('x' the mean, 'x_std' the std), drawn from
  `key`; a batch of latents (no 'x_std') passes unchanged."""
  import jax
  if 'x_std' not in batch:
    return batch
  batch = dict(batch)
  std = batch.pop('x_std')
  batch['x'] = batch['x'] + std * jax.random.normal(key, batch['x'].shape, batch['x'].dtype)
  return batch


def latent_arrays_to_batch(arrays: dict) -> dict:
  """read_arrays' dict -> the host batch {'x', 'x_std' float32, 'y' int32 labels, 'time_ids' float32, and each
  image's captions 'count', 'tokens', 'pooled' as stored}."""
  batch = {key: np.asarray(arrays[key], np.float32) for key in ('x', 'x_std', 'time_ids') if key in arrays}
  batch.update({key: arrays[key] for key in CAPTION_FIELDS if key in arrays})
  if 'label' in arrays:
    batch['y'] = arrays['label'].astype(np.int32)
  return batch


def stack_latents(records) -> dict:
  return latent_arrays_to_batch({key: np.stack([record[key] for record in records]) for key in records[0]})


def draw_captions(batch: dict, rng: np.random.Generator) -> dict:
  """The batch with y = the text condition of one caption per image, uniform among its `count`, drawn from `rng`
  (its 'tokens' and 'pooled', or its token 'ids' [b, encoders, 77] for the step to encode); time_ids (SDXL) join
  the condition."""
  batch = dict(batch)
  count = batch.pop('count')
  rows = np.arange(len(count))
  chosen = np.minimum((rng.random(len(count)) * count).astype(np.int64), count - 1)
  condition = {name: batch.pop(name)[rows, chosen] for name in CAPTION_ROWS if name in batch}
  if 'time_ids' in batch:
    condition['time_ids'] = batch.pop('time_ids')
  batch['y'] = condition
  return batch


class LatentData(HostBatches):
  """DataPipeline of a latents directory (kind 'host'); no embedded evaluator (FID needs the VAE decoder).
  has_images: whether batches hold latents 'x' (a prompt list's hold only y)."""

  evaluator = ''

  def __init__(self, config_data, *, global_batch_size: int, seed: int):
    self._source = open_source(config_data.latents_dir, latent_norm(config_data))
    self.data_shape, self.num_classes = self._source.shape, self._source.num_classes
    self.has_images = self._source.has_moments
    self._text = self._source.info.get('text')
    self._directory, self._prompts_file = config_data.latents_dir, config_data.get('prompts_file', '')
    self._seed, self._process, self._drawn = int(seed), 0, 0
    self._encoders = None
    if self._text:
      import jax
      self._process = jax.process_index()
      self._encoders = self._check_text_encoding(config_data.get('text_encoding', 'stored'))
    self._open_batches(self._source, config_data, global_batch_size=global_batch_size, seed=seed,
                       record_batch_fn=stack_latents, arrays_batch_fn=latent_arrays_to_batch)

  @functools.cached_property
  def conditioning(self) -> Conditioning:
    """Labels (or none); for a captioned directory text, the null and evaluation prompts as encode_latents stored
    them, or data.prompts_file' prompts encoded now with the directory's text encoders."""
    if not self._text:
      return Conditioning.of_labels(self.num_classes)
    stored = read_conditions(self._directory)
    prompts = stored['prompts']
    if self._prompts_file:
      prompts = encode_prompt_file(self._prompts_file, self._text)
    return Conditioning('text', null_text=stored['null'], prompts=prompts)

  def prompt_texts(self) -> list | None:
    """data.prompts_file's prompts, else the evaluation prompts encode_latents stored, else None."""
    if self._prompts_file:
      from fewstep_jax import text
      return text.read_prompts(self._prompts_file)
    if not self._text:
      return None
    return (read_conditions(self._directory)['texts'] or {}).get('prompts')

  def _check_text_encoding(self, encoding: str):
    """The text encoders the step runs (data.text_encoding='on_the_fly', on a directory of token ids), or None; a
    clear error where the config and the directory disagree."""
    storage = self._text.get('storage', 'states')
    if encoding not in TEXT_STORAGES.values():
      raise ConfigError(f'unknown data.text_encoding {encoding!r}; known: {sorted(TEXT_STORAGES.values())}')
    if TEXT_STORAGES[storage] != encoding:
      flag = {'stored': 'states', 'on_the_fly': 'ids'}[encoding]
      raise ConfigError(f'data.text_encoding={encoding!r}, but {self._directory} holds {storage}: set '
                        f'--config.data.text_encoding={TEXT_STORAGES[storage]}, or encode it again with '
                        f'encode_latents --text_storage={flag}')
    if encoding == 'stored':
      return None
    from fewstep_jax import text
    return text.load_pipeline(self._text['pipeline'], condition=self._text['condition'])

  def device_params(self):
    """The parameters `on_device` needs besides the batch, passed to the jitted step as an argument (never closed
    over as constants): the text encoders' [one tree per encoder] under data.text_encoding='on_the_fly', else
    None."""
    return None if self._encoders is None else [encoder.params for encoder in self._encoders]

  def next_batch(self) -> dict:
    batch = next(self._batches)
    if 'count' not in batch:
      return batch
    rng = np.random.default_rng([self._seed, self._process, self._drawn])
    self._drawn += 1
    return draw_captions(batch, rng)

  def get_state(self) -> dict:
    state = self._batches.get_state()
    return dict(state, captions_drawn=self._drawn) if self._text else state

  def set_state(self, state: dict) -> None:
    state = dict(state)
    drawn = state.pop('captions_drawn', None)
    if self._text and drawn is None:
      raise ConfigError('this checkpoint\'s data state has no captions_drawn: it was not written by a captioned '
                        'latents directory; resume it with the data config it was trained with')
    self._drawn = int(drawn or 0)
    super().set_state(state)

  def on_device(self, key, batch: dict, params=None) -> dict:
    """A posterior sample per latent, x = mean + std * eps, drawn on the device from the step's key (batches of
    posterior means pass unchanged); stored text states (float16) become float32 here, after the transfer; token
    ids [b, encoders, 77] become the text condition by the text encoders with `params` (device_params())."""
    import jax
    import jax.numpy as jnp
    batch = dict(batch)
    if isinstance(batch.get('y'), dict):
      condition = dict(batch['y'])
      if 'ids' in condition:
        condition.update(self._encode_ids(condition.pop('ids'), params))
      batch['y'] = jax.tree.map(lambda leaf: leaf.astype(jnp.float32), condition)
    return sample_moments(key, batch)

  def _encode_ids(self, ids, params) -> dict:
    from fewstep_jax import text
    if params is None:
      raise ConfigError('token ids reached the step without the text encoders\' parameters: pass '
                        'data.device_params() to on_device')
    states, pooled = text.encode_ids(self._encoders, [ids[:, index] for index in range(ids.shape[1])], params)
    return {'tokens': states, **({'pooled': pooled} if self._text['pooled'] else {})}

  def reference_samples(self, n: int, split: str, seed: int) -> dict:
    """The first n latents (posterior means) of a seed-permutation (there is one split: `split` is ignored), with
    one caption each (drawn from `seed`) where captioned."""
    del split
    if not self.has_images:
      raise ConfigError(f'{self._directory} holds prompts only: it has no reference latents; evaluate without data '
                        'references (no FID against it), or encode an image-caption set')
    indices = np.random.default_rng(seed).permutation(len(self._source))[:n]
    batch = stack_latents([self._source[int(i)] for i in indices])
    batch.pop('x_std', None)
    return draw_captions(batch, np.random.default_rng(seed)) if 'count' in batch else batch


def encode_prompt_file(path: str, text_info: dict) -> dict:
  """data.prompts_file: the prompts of `path` encoded with the directory's text encoders (text_info['pipeline'])."""
  from fewstep_jax import text
  encoders = text.load_pipeline(text_info['pipeline'], condition=text_info['condition'])
  return text.encode_prompts(encoders, text.read_prompts(path), text_info['image_size'])

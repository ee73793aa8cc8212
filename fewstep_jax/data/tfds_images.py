"""Image datasets prepared by TFDS in a local data directory, read by random access (`tfds.data_source`).

Reading needs no TensorFlow: array_record files are decoded with numpy, and PNG/JPEG images with PIL. Preparing
most public datasets does need TensorFlow and network access, so it happens elsewhere (see
`DatasetNotPreparedError`); this module only reads, and never downloads.
"""
import contextlib
import io

import grain.python as grain
import numpy as np
import PIL.Image
import tensorflow_datasets as tfds
from absl import logging

from fewstep_jax.errors import ConfigError, InputNotFoundError

# Formats that TFDS can serve by random access; 'tfrecord' (the default of `tfds build`) is sequential only.
_RANDOM_ACCESS_FORMATS = ('array_record', 'parquet')


class DatasetNotPreparedError(InputNotFoundError):
  """A TFDS dataset is missing from the data directory, or stored in a format without random access."""


@contextlib.contextmanager
def quiet_tfds():
  """TFDS's messages about downloading (nothing is downloaded), missing dataset_info (of a dataset not prepared,
  which the error says) and its progress bars (escape codes in log files): nothing true about a dataset read or
  built here."""
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
      yield
  finally:
    logging.set_verbosity(verbosity)


def _preparation_hint(name: str, data_dir) -> str:
  return (
      f'Run `tfds build {name} --data_dir={data_dir} --file_format=array_record` on a machine with network '
      f'access (it needs tensorflow), or copy the prepared array_record files into {data_dir}/{name}/, '
      f'then point the run at that directory with --config.data.dir={data_dir}.'
  )


def prepared_builder(name: str, data_dir):
  """Returns the TFDS builder of `name` (e.g. 'cifar10', 'imagenet_resized/64x64') prepared in `data_dir`.

  Raises DatasetNotPreparedError, naming the dataset, the directory and how to prepare it, when the data is not
  there in a random-access format.
  """
  try:
    with quiet_tfds():
      builder = tfds.builder(name, data_dir=data_dir)
      prepared = builder.is_prepared()
  except tfds.core.registered.DatasetNotFoundError as error:
    # Neither registered in TFDS code nor found on disk.
    raise DatasetNotPreparedError(
        f'TFDS dataset {name!r} is not prepared in {data_dir}. {_preparation_hint(name, data_dir)}'
    ) from error
  if not prepared:
    raise DatasetNotPreparedError(
        f'TFDS dataset {name!r} is not prepared in {data_dir} (looked for {builder.data_path}). '
        f'{_preparation_hint(name, data_dir)}'
    )
  file_format = builder.info.file_format.value
  if file_format not in _RANDOM_ACCESS_FORMATS:
    raise DatasetNotPreparedError(
        f'TFDS dataset {name!r} in {builder.data_path} is stored as {file_format}, which cannot be read by '
        f'random access; prepare it again with --file_format=array_record. {_preparation_hint(name, data_dir)}'
    )
  return builder


def image_spec(builder, image_size: int):
  """Returns (data_shape (H, W, C) after resizing, num_classes) of a builder with 'image' and 'label' features."""
  features = builder.info.features
  if 'image' not in features or 'label' not in features:
    raise ConfigError(f'{builder.name} needs features "image" and "label"; it has {sorted(features.keys())}')
  height, width, channels = features['image'].shape
  if image_size:
    height = width = image_size
  elif height is None or width is None:
    raise ConfigError(f'{builder.name} has images of varying size: set config.data.image_size')
  return (height, width, channels), features['label'].num_classes


def open_split(builder, split: str):
  """Returns the random-access source of `split` (any TFDS split spec, e.g. 'train[:90%]')."""
  # What `tfds.data_source(name, split=split, data_dir=..., download=False)` does once it has the builder.
  return builder.as_data_source(split=split)


class ResizeImage(grain.MapTransform):
  """Resizes record['image'] (uint8 [H, W, C]) to [size, size, C] with PIL bicubic, if it is not that size.

  PIL widens its filter when it shrinks an image, so downsampling is antialiased. The aspect ratio is not kept:
  prepare square images (e.g. the center-cropped 'imagenet_resized' variants) for square models.
  """

  def __init__(self, size: int):
    self._size = size

  def map(self, record):
    image = record['image']
    if image.shape[:2] == (self._size, self._size):
      return record
    # PIL reads single-channel images as 2-D arrays.
    pil_image = PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    resized = np.asarray(pil_image.resize((self._size, self._size), PIL.Image.Resampling.BICUBIC))
    return {**record, 'image': resized.reshape(self._size, self._size, image.shape[-1])}


class SplitRecords:
  """A split's random-access source with a batched read for the permutation reader (pipeline.make_batches).

  source[i] is the TFDS record (grain applies its record transforms); read_arrays(indices) reads the records in
  one batched call, applies `record_transforms` and returns {'image': uint8 [b, H, W, C], 'label': int64 [b]}.
  """

  def __init__(self, source, data_shape, record_transforms=()):
    self._source, self._transforms = source, tuple(record_transforms)
    self.record_nbytes = int(np.prod(data_shape)) + 8

  def __len__(self):
    return len(self._source)

  def __getitem__(self, index):
    return self._source[index]

  def __repr__(self):
    # Grain checks a restored state's source by repr: the TFDS source's, as checkpoints before SplitRecords hold.
    return repr(self._source)

  def read_arrays(self, indices) -> dict:
    records = self._source.__getitems__([int(index) for index in indices])
    for transform in self._transforms:
      records = [transform.map(record) for record in records]
    return {'image': np.stack([record['image'] for record in records]),
            'label': np.array([record['label'] for record in records], np.int64)}

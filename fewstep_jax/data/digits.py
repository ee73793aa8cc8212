"""The scikit-learn 8x8 digits as a local TFDS dataset in array_record files, built without TensorFlow.

TFDS 4.9's `GeneratorBasedBuilder` writes array_record files with its own numpy example serializer, so
`download_and_prepare(file_format='array_record')` needs no TensorFlow as long as every feature encodes
without it: `Tensor` and `ClassLabel` do, whereas `Image` would call `tf.image.encode_png` on numpy input.
The 8x8 images are therefore stored as raw uint8 tensors (64 bytes each, smaller than a PNG anyway).

TFDS writes into `<dir>/digits8x8/incomplete.<random>_<version>/` and renames that folder to `<version>/` only
after the records and `dataset_info.json` are complete, so a crash can leave a stray `incomplete.*` folder
but never a half-written dataset that reads as complete; the next call then builds again.
"""
import tempfile

import numpy as np
import tensorflow_datasets as tfds

from fewstep_jax.data.digits_arrays import IMAGE_SHAPE, NUM_CLASSES, load_digits_arrays
from fewstep_jax.data.tfds_images import quiet_tfds

DIGITS_NAME = 'digits8x8'


class Digits8x8(tfds.core.GeneratorBasedBuilder):
  """Registers as 'digits8x8': images uint8 [8, 8, 1] in 0..255, labels 0..9; splits train (1437), test (360)."""

  # A prepared version is never rebuilt: bump it whenever load_digits_arrays changes what it returns.
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'The fixed split of fewstep_jax.data.digits_arrays.'}
  # TFDS looks for checksum files next to a builder's code through `importlib_resources`, which it only
  # requires on Python < 3.9, so the lookup fails on newer Pythons without it; this builder has no such files.
  code_path = None

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description='The 1797 scikit-learn 8x8 handwritten digits (UCI), rescaled from 0..16 to 0..255.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
            'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }),
        supervised_keys=('image', 'label'),
        # Keeps records in generation order, so index i of a split is example i of load_digits_arrays.
        disable_shuffling=True,
        homepage='https://archive.ics.uci.edu/dataset/80',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data ships with scikit-learn.
    return {split: self._generate_examples(split) for split in ('train', 'test')}

  def _generate_examples(self, split):
    images, labels = load_digits_arrays(split)
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {'image': image, 'label': int(label)}


def ensure_digits(data_dir) -> None:
  """Builds the 'digits8x8' dataset under `data_dir` unless a complete copy is already there."""
  with quiet_tfds():
    builder = Digits8x8(data_dir=data_dir, file_format='array_record')
    prepared = builder.is_prepared()
  if prepared:
    return
  print(f'digits: writing the bundled scikit-learn digits as a TFDS dataset under {data_dir} (once)', flush=True)
  tfds.disable_progress_bar()
  # Nothing is downloaded, but TFDS still creates a download folder: keep it out of data_dir.
  with tempfile.TemporaryDirectory() as download_dir, quiet_tfds():
    try:
      builder.download_and_prepare(
          download_dir=download_dir,
          download_config=tfds.download.DownloadConfig(try_download_gcs=False),
      )
    except OSError:
      # Another process (multi-host, shared data_dir) may have renamed its finished copy into place first.
      if not builder.is_prepared():
        raise

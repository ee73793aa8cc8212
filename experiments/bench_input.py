r"""Host input pipeline benchmark: batches per second and CPU per record of each reader on each source.

  python experiments/bench_input.py [--batch_size=128] [--batches=50] [--readers=grain,stream,memory]
                                    [--sources=digits,cifar10_sized,latents] [--data_dir=/tmp/fewstep_bench_input]

Sources (generated on first use under --data_dir, nothing is downloaded):
  digits         the scikit-learn 8x8 digits as the project's TFDS dataset (1437 training records of 64 bytes)
  cifar10_sized  a TFDS array_record dataset of 50,000 random uint8 [32, 32, 3] images with labels 0..9, the size
                 of CIFAR-10's training split (stored as raw tensors, as the digits are: TFDS's PNG encoder needs
                 TensorFlow; a PNG-encoded CIFAR-10 adds its decoding to the grain and stream rows)
  latents        4,096 posterior-moment records of [32, 32, 4] (ImageNet-256 SD-VAE latents' shape), written by
                 the project's encode_latents record format

Readers (config.data.reader): grain (one record at a time: the only reader before data.reader existed), stream
(a batched read per batch), memory (the records read once, then a fancy index per batch).

Prints one JSON object per (source, reader) and a table:
  batches_per_s   batches built per second by the pipeline alone (prefetch 0: built on request, in this thread)
  cpu_s_per_batch process CPU seconds per batch
  us_per_record   cpu_s_per_batch / batch_size, in microseconds
  setup_s         seconds to open the pipeline (for memory: reading every record once)
The pipeline runs alone here; in training it shares the host's cores with the step, which is why its CPU counts.
"""
import json
import os
import time

import numpy as np
from absl import app, flags

flags.DEFINE_integer('batch_size', 128, 'Records per batch.')
flags.DEFINE_integer('batches', 50, 'Timed batches per (source, reader), after 3 untimed ones.')
flags.DEFINE_list('readers', ['grain', 'stream', 'memory'], 'Readers to time.')
flags.DEFINE_list('sources', ['digits', 'cifar10_sized', 'latents'], 'Sources to time.')
flags.DEFINE_string('data_dir', '/tmp/fewstep_bench_input', 'Where the sources are generated (once).')
FLAGS = flags.FLAGS

CIFAR10_SIZED_RECORDS = 50_000
LATENT_RECORDS, LATENT_SHAPE = 4096, (32, 32, 4)


def _cifar10_sized_builder():
  import tensorflow_datasets as tfds

  class BenchCifar10Sized(tfds.core.GeneratorBasedBuilder):
    """Registers as 'bench_cifar10_sized': random uint8 [32, 32, 3] images, labels 0..9, one 'train' split."""

    VERSION = tfds.core.Version('1.0.0')
    code_path = None  # No checksum files next to this builder (see fewstep_jax/data/digits.py).

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          'image': tfds.features.Tensor(shape=(32, 32, 3), dtype=np.uint8),
          'label': tfds.features.ClassLabel(num_classes=10)}), disable_shuffling=True)

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._generate_examples()}

    def _generate_examples(self):
      rng = np.random.default_rng(0)
      for index in range(CIFAR10_SIZED_RECORDS):
        yield index, {'image': rng.integers(0, 256, (32, 32, 3), np.uint8), 'label': index % 10}

  return BenchCifar10Sized


def _ensure_tfds(builder_class, data_dir):
  import tempfile

  import tensorflow_datasets as tfds
  builder = builder_class(data_dir=data_dir, file_format='array_record')
  if not builder.is_prepared():
    print(f'writing {builder.name} under {data_dir} (once)', flush=True)
    tfds.disable_progress_bar()
    with tempfile.TemporaryDirectory() as download_dir:
      builder.download_and_prepare(download_dir=download_dir,
                                   download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder.name


def _ensure_latents(directory):
  from array_record.python import array_record_module

  from fewstep_jax.data import latents
  info_path = os.path.join(directory, 'info.json')
  if os.path.exists(info_path):
    return
  print(f'writing {LATENT_RECORDS} latent moments under {directory} (once)', flush=True)
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(0)
  writer = array_record_module.ArrayRecordWriter(latents.shard_paths(directory, 1)[0], 'group_size:1')
  for index in range(LATENT_RECORDS):
    mean = rng.normal(size=LATENT_SHAPE).astype(np.float32)
    writer.write(latents.moments_record(mean, np.full(LATENT_SHAPE, 0.1, np.float32), index % 1000))
  writer.close()
  with open(info_path, 'w') as f:
    json.dump({'format': latents.MOMENTS_FORMAT, 'shape': list(LATENT_SHAPE), 'num_examples': LATENT_RECORDS,
               'num_classes': 1000, 'num_shards': 1}, f)


def source_config(source: str, data_dir: str):
  from fewstep_jax.data import data_defaults
  config = data_defaults()
  config.dir = data_dir
  if source == 'digits':
    config.name = 'digits'
  elif source == 'cifar10_sized':
    config.name, config.tfds_name = 'tfds', _ensure_tfds(_cifar10_sized_builder(), data_dir)
  elif source == 'latents':
    config.name, config.latents_dir = 'latents', os.path.join(data_dir, 'latents')
    _ensure_latents(config.latents_dir)
  else:
    raise ValueError(f'unknown source {source!r}; known: digits, cifar10_sized, latents')
  return config


def measure(config, reader: str, batch_size: int, batches: int) -> dict:
  from fewstep_jax.data import build_data
  config.reader, config.prefetch = reader, 0
  start = time.perf_counter()
  data = build_data(config, global_batch_size=batch_size, seed=0)
  setup_s = time.perf_counter() - start
  for _ in range(3):
    data.next_batch()
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(batches):
    data.next_batch()
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  return {'reader': reader, 'batch_size': batch_size, 'batches_per_s': batches / wall,
          'cpu_s_per_batch': cpu / batches, 'us_per_record': 1e6 * cpu / (batches * batch_size),
          'setup_s': setup_s}


def main(argv):
  del argv
  rows = []
  for source in FLAGS.sources:
    config = source_config(source, FLAGS.data_dir)
    for reader in FLAGS.readers:
      row = dict(source=source, **measure(config, reader, FLAGS.batch_size, FLAGS.batches))
      rows.append(row)
      print(json.dumps(row), flush=True)
  print('\n| source | reader | batches/s | CPU s per batch | us per record | setup s |\n|---|---|---|---|---|---|')
  for row in rows:
    print(f'| {row["source"]} | {row["reader"]} | {row["batches_per_s"]:.1f} | {row["cpu_s_per_batch"]:.4f} | '
          f'{row["us_per_record"]:.1f} | {row["setup_s"]:.2f} |')


if __name__ == '__main__':
  app.run(main)

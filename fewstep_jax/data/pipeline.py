"""Host input pipelines: infinite, shuffled, per-process batches with an exactly restorable state.

Two readers, chosen by `config.data.reader` (see `make_batches`):

- `PermutationBatches` ('memory' / 'stream'): for sources with a vectorised `read_batch(indices) -> batch`.
  Each epoch a numpy permutation of all records, computed alike on every process from (seed, epoch); a batch is
  one `read_batch` of the next indices, so an in-memory dataset costs a fancy index per batch instead of a
  Python call per record.
- `BatchIterator` ('grain'): any random-access source (`len(source)`, `source[i] -> record dict`) through grain,
  one record at a time, optionally in `worker_count` processes (for heavy per-record decoding).

Either way batches are {'x': float32 [b, H, W, C] in [-1, 1], 'y': int32 [b]} (or what the source's batch
function makes) with `b = global_batch_size // process_count`, built ahead in a background thread (`prefetch`).

Cost, measured on a 2-core development machine (experiments/bench_input.py): grain handles one record at a time
in Python, about 20 us per record unshuffled and about 60 us shuffled (its `IndexSampler` calls `index_shuffle`
per record), plus the source's own decoding (a TFDS record: about 200 us more); `PermutationBatches` on arrays
in memory costs well under a microsecond per record.
"""
import collections
import concurrent.futures
import json

import grain.python as grain
import numpy as np

from fewstep_jax.conditions import Conditioning
from fewstep_jax.data.digits_arrays import to_model_range
from fewstep_jax.errors import ConfigError


def stack_model_batch(records) -> dict:
  """Stacks records into a model batch in one vectorised conversion.

  records: sequence of b dicts {'image': uint8 [H, W, C], 'label': int}; any other fields are dropped.
  Returns {'x': float32 [b, H, W, C] in [-1, 1], 'y': int32 [b]}.
  """
  images = np.stack([record['image'] for record in records])
  labels = np.array([record['label'] for record in records], dtype=np.int32)
  return {'x': to_model_range(images), 'y': labels}


class _Prefetcher:
  """Runs `produce() -> (batch, state_after_it)` ahead in one background thread, strictly in order, keeping the
  state of the batches handed out (not of those built ahead), so a restored state continues exactly where the
  consumer stopped."""

  def __init__(self, produce, depth: int):
    self._produce, self._depth = produce, depth
    self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix='fewstep_data')
    self._pending = collections.deque()

  def start(self):
    while len(self._pending) < self._depth:
      self._pending.append(self._executor.submit(self._produce))

  def next(self):
    """Returns (batch, state after it)."""
    if not self._pending:
      self._pending.append(self._executor.submit(self._produce))
    result = self._pending.popleft().result()
    self.start()
    return result

  def stop(self):
    """Drops the batches built ahead: cancels those not started and lets the running one end."""
    for future in self._pending:
      future.cancel()
    concurrent.futures.wait(self._pending)
    self._pending.clear()

  def close(self):
    self.stop()
    self._executor.shutdown(wait=True)


class BatchIterator:
  """Infinite shuffled per-process batches from `source` through grain, prefetched, with `get_state`/`set_state`.

  Grain's `IndexSampler` gives each process a disjoint, contiguous shard of the records and reshuffles it every
  epoch with a seed; batches run across epoch boundaries. The state is a JSON-serialisable dict (grain's
  DataLoader state), and grain checks on restore that the seed, the sharding, the worker count and the source
  match.
  """

  reader = reader_name = 'grain'

  def __init__(self, source, *, global_batch_size: int, seed: int, shard_options: grain.ShardOptions | None = None,
               record_transforms=(), worker_count: int = 0, prefetch: int = 2, batch_fn=stack_model_batch):
    """Args:
      source: random-access source of records (see the module docstring).
      global_batch_size: batch size summed over processes; must divide by the process count.
      seed: shuffle seed, an integer in [0, 2**32).
      shard_options: which shard this process reads; defaults to this JAX process of all of them.
      record_transforms: grain transforms applied to each record before batching (e.g. a resize).
      worker_count: grain worker processes; 0 reads in this process.
      prefetch: batches built ahead in a background thread; 0 builds each batch on request.
      batch_fn: records -> batch dict; by default images and labels in the model's range.
    """
    shard_options = shard_options or grain.ShardByJaxProcess(drop_remainder=True)
    if global_batch_size % shard_options.shard_count:
      raise ConfigError(f'global batch size {global_batch_size} does not divide by the {shard_options.shard_count} '
                        'processes')
    self.batch_size = global_batch_size // shard_options.shard_count
    sampler = grain.IndexSampler(num_records=len(source), shard_options=shard_options, shuffle=True,
                                 num_epochs=None, seed=seed)
    loader = grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=[*record_transforms,
                    grain.Batch(self.batch_size, drop_remainder=True, batch_fn=batch_fn)],
        worker_count=worker_count,
        shard_options=shard_options,
        # Reader threads only contend with the trainer for the GIL when records are local and cheap to read;
        # parallel decoding comes from worker_count processes instead.
        read_options=grain.ReadOptions(num_threads=0, prefetch_buffer_size=0),
    )
    self._loader_iterator = iter(loader)
    self._consumed_state = self._loader_iterator.get_state()
    self._prefetcher = _Prefetcher(self._produce, prefetch)
    self._prefetcher.start()

  def _produce(self):
    batch = next(self._loader_iterator)
    return batch, self._loader_iterator.get_state()

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    """Returns the next batch {'x': float32 [b, H, W, C], 'y': int32 [b]}."""
    batch, self._consumed_state = self._prefetcher.next()
    return batch

  def get_state(self) -> dict:
    return json.loads(self._consumed_state)

  def close(self) -> None:
    self._prefetcher.close()

  def set_state(self, state: dict) -> None:
    if state.get('reader') == PermutationBatches.reader:
      raise ConfigError('this checkpoint\'s data state was written by the permutation reader: resume with '
                        f'--config.data.reader={state.get("source_reader", "memory")}')
    self._prefetcher.stop()
    self._loader_iterator.set_state(json.dumps(state).encode())
    self._consumed_state = self._loader_iterator.get_state()
    self._prefetcher.start()


class PermutationBatches:
  """Infinite shuffled per-process batches of a source with vectorised reads, prefetched, with exact resume.

  source: `len(source)` and `source.read_batch(indices: int64 [b]) -> batch dict` (the records at `indices`, in
  that order, already batched). Each epoch e every process computes the same permutation of all N records from
  (seed, e) and takes its own contiguous 1/P of it (the permutation's last N mod P records sit that epoch out),
  so a process sees different records every epoch; batches run across epoch boundaries.

  State (JSON): {'reader', 'seed', 'num_records', 'process_index', 'process_count', 'epoch', 'offset'}, offset
  counting the records of this epoch's slice already handed out. Restoring checks that the seed, the record count
  and the sharding match.
  """

  reader = 'permutation'

  def __init__(self, source, *, global_batch_size: int, seed: int, process_index: int, process_count: int,
               prefetch: int = 2, name: str = 'memory'):
    if global_batch_size % process_count:
      raise ConfigError(f'global batch size {global_batch_size} does not divide by the {process_count} processes')
    self._per_epoch = len(source) // process_count
    if self._per_epoch == 0:
      raise ConfigError(f'{len(source)} records cannot be shared by {process_count} processes')
    self.batch_size = global_batch_size // process_count
    self._source, self.reader_name = source, name
    self._fixed = {'reader': self.reader, 'seed': int(seed), 'num_records': len(source),
                   'process_index': int(process_index), 'process_count': int(process_count)}
    self._position = (0, 0)  # (epoch, offset) of the next batch to build.
    self._consumed = self._position
    self._epoch_slice = (None, None)
    self._prefetcher = _Prefetcher(self._produce, prefetch)
    self._prefetcher.start()

  def _slice(self, epoch: int) -> np.ndarray:
    """This process's records of `epoch`, in order."""
    if self._epoch_slice[0] != epoch:
      order = np.random.default_rng([self._fixed['seed'], epoch]).permutation(self._fixed['num_records'])
      start = self._fixed['process_index'] * self._per_epoch
      self._epoch_slice = (epoch, order[start:start + self._per_epoch])
    return self._epoch_slice[1]

  def _produce(self):
    epoch, offset = self._position
    parts, needed = [], self.batch_size
    while needed:
      part = self._slice(epoch)[offset:offset + needed]
      parts.append(part)
      needed -= len(part)
      offset += len(part)
      if offset == self._per_epoch:
        epoch, offset = epoch + 1, 0
    self._position = (epoch, offset)
    indices = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return self._source.read_batch(indices), self._position

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch, self._consumed = self._prefetcher.next()
    return batch

  def close(self) -> None:
    self._prefetcher.close()

  def get_state(self) -> dict:
    return dict(self._fixed, epoch=self._consumed[0], offset=self._consumed[1], source_reader=self.reader_name)

  def set_state(self, state: dict) -> None:
    if state.get('reader') != self.reader:
      raise ConfigError('this checkpoint\'s data state was written by the grain reader (runs before data.reader '
                        'existed, or reader=\'grain\'): resume with --config.data.reader=grain')
    mismatched = {key: (state.get(key), value) for key, value in self._fixed.items() if state.get(key) != value}
    if mismatched:
      raise ConfigError('the data state belongs to another input pipeline; (stored, this run): ' + ', '.join(
          f'{key}=({stored}, {ours})' for key, (stored, ours) in mismatched.items()))
    self._prefetcher.stop()
    self._position = self._consumed = (int(state['epoch']), int(state['offset']))
    self._prefetcher.start()


class HostBatches:
  """The host-side part of a DataPipeline whose batches come from `self._batches` (see `_open_batches`)."""

  kind = 'host'

  @property
  def conditioning(self) -> Conditioning:
    """Class labels (num_classes of them), or none: what a host dataset's batches carry unless it says otherwise."""
    return Conditioning.of_labels(self.num_classes)

  def _open_batches(self, source, config_data, **make_batches_args):
    """Sets self._batches = make_batches(source, config_data, ...), remembering how, so that under reader 'auto' a
    checkpoint written by another reader (e.g. grain, before data.reader existed) resumes with that reader."""
    self._batch_args = (source, config_data, make_batches_args)
    self._batches = make_batches(source, config_data, **make_batches_args)

  @staticmethod
  def on_device(key, batch: dict, params=None) -> dict:
    """Called on the device, inside the train step, with the step's data key and `device_params()`: a source whose
    host batches are distributions (VAE posterior moments) draws its sample here, one of token ids encodes them.
    Identity by default."""
    del key, params
    return batch

  def device_params(self):
    """Arrays `on_device` reads (frozen text encoders' parameters), passed to the step as an argument; None."""
    return None

  def device_sample(self, key, n: int) -> dict:
    raise TypeError(f'{type(self).__name__} is read on the host: use next_batch()')

  def next_batch(self) -> dict:
    return next(self._batches)

  def get_state(self) -> dict:
    return self._batches.get_state()

  def set_state(self, state: dict) -> None:
    stored = state.get('source_reader', 'memory') if state.get('reader') == PermutationBatches.reader else 'grain'
    source, config_data, args = self._batch_args
    if config_data.get('reader', 'grain') == 'auto' and (stored == 'grain') != (self._batches.reader == 'grain'):
      self._batches.close()
      self._batches = make_batches(source, {**dict(config_data.items()), 'reader': stored}, **args)
    self._batches.set_state(state)


class InMemory:
  """A source's records read once into host memory: read_arrays is then a fancy index."""

  def __init__(self, source, chunk: int = 4096):
    parts = [source.read_arrays(np.arange(start, min(start + chunk, len(source))))
             for start in range(0, len(source), chunk)]
    self._arrays = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    self._length = len(source)

  def __len__(self):
    return self._length

  def read_arrays(self, indices: np.ndarray) -> dict:
    return {key: value[indices] for key, value in self._arrays.items()}


class _ArraysAsBatches:
  """read_batch(indices) = batch_fn(source.read_arrays(indices))."""

  def __init__(self, source, batch_fn):
    self._source, self._batch_fn = source, batch_fn

  def __len__(self):
    return len(self._source)

  def read_batch(self, indices: np.ndarray) -> dict:
    return self._batch_fn(self._source.read_arrays(indices))


READERS = ('auto', 'memory', 'stream', 'grain')


def choose_reader(config_data, source) -> str:
  """The reader config_data.reader names, 'auto' resolved: grain when the source has no vectorised read or
  worker processes are asked for, else memory when the records fit in data.memory_gib, else stream."""
  reader = config_data.get('reader', 'grain')  # Runs written before the field read through grain.
  if reader not in READERS:
    raise ConfigError(f'unknown data.reader {reader!r}; known: {list(READERS)}')
  vectorised = hasattr(source, 'read_arrays')
  if reader == 'auto':
    if not vectorised or config_data.get('worker_count', 0):
      return 'grain'
    fits = len(source) * source.record_nbytes <= config_data.get('memory_gib', 4.0) * 2**30
    return 'memory' if fits else 'stream'
  if reader != 'grain' and not vectorised:
    raise ConfigError(f'data.reader={reader!r} needs a source with vectorised reads; {type(source).__name__} has '
                      "none: use data.reader='grain'")
  return reader


def make_batches(source, config_data, *, global_batch_size: int, seed: int, record_batch_fn, arrays_batch_fn,
                 record_transforms=(), shard_options=None):
  """The batch iterator of `source` under config_data.reader (see choose_reader).

  source: random access (`source[i] -> record`) for grain, and `read_arrays(indices) -> dict of arrays` plus
  `record_nbytes` (bytes per record in memory) for the permutation reader. record_batch_fn: records -> batch
  (grain); arrays_batch_fn: read_arrays' dict -> the same batch. `record_transforms` apply under grain only:
  vectorised sources apply their own.
  """
  reader = choose_reader(config_data, source)
  prefetch = config_data.get('prefetch', 2)
  if reader == 'grain':
    return BatchIterator(source, global_batch_size=global_batch_size, seed=seed, shard_options=shard_options,
                         record_transforms=record_transforms, worker_count=config_data.get('worker_count', 0),
                         prefetch=prefetch, batch_fn=record_batch_fn)
  import jax
  process_index, process_count = ((shard_options.shard_index, shard_options.shard_count) if shard_options
                                  else (jax.process_index(), jax.process_count()))
  arrays = InMemory(source) if reader == 'memory' else source
  return PermutationBatches(_ArraysAsBatches(arrays, arrays_batch_fn), global_batch_size=global_batch_size,
                            seed=seed, process_index=process_index, process_count=process_count,
                            prefetch=prefetch, name=reader)

r"""Step-time and memory benchmark of one experiment config's training step.

  python experiments/bench.py --config=configs/digits/flow_matching.py [--config.train.batch_size=256] --json

Prints one JSON object:
  compile_s       seconds to lower and compile the jitted train step
  step_time_s     median wall time of a step (device work, blocked on), after warm-up
  flops           compiled cost analysis: FLOPs of one step
  bytes_accessed  compiled cost analysis: bytes read and written by one step
  temp_bytes      compiled memory analysis: temporary buffer bytes of one step
  data_s          median host input time per step (next batch + transfer to devices; 0 for device-side data)
FLOPs and bytes come from XLA and do not depend on machine noise; times do, so compare them as ratios taken in
one run on one machine.
"""
import json
import statistics
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from fewstep_jax.train import trainer

config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.DEFINE_integer('warmup', 3, 'Untimed steps after compilation.')
flags.DEFINE_integer('steps', 20, 'Timed steps.')
flags.DEFINE_bool('json', False, 'Print only the JSON object.')
flags.mark_flags_as_required(['config'])
FLAGS = flags.FLAGS


def _cost(compiled, key):
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older JAX: one dict per computation.
    return float(sum(a.get(key, 0.0) for a in analysis))
  return float(analysis.get(key, 0.0))


def benchmark(config, warmup: int, steps: int) -> dict:
  run = trainer.Run(config)
  state = run.init_state()
  train_step = run.make_train_step()
  batch = run.next_global_batch()
  start = time.perf_counter()
  compiled = train_step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start

  data_times, step_times = [], []
  for i in range(warmup + steps):
    start = time.perf_counter()
    batch = run.next_global_batch()
    jax.block_until_ready(batch)
    data_s = time.perf_counter() - start
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    if i >= warmup:
      data_times.append(data_s)
      step_times.append(time.perf_counter() - start)

  memory = compiled.memory_analysis()
  return {
      'config': config.method.name + '/' + config.data.name + '/' + config.network.name,
      'devices': jax.device_count(),
      'batch_size': config.train.batch_size,
      'compile_s': compile_s,
      'step_time_s': statistics.median(step_times),
      'flops': _cost(compiled, 'flops'),
      'bytes_accessed': _cost(compiled, 'bytes accessed'),
      'temp_bytes': int(memory.temp_size_in_bytes) if memory is not None else None,
      'data_s': statistics.median(data_times),
  }


def main(argv):
  del argv
  result = benchmark(FLAGS.config, FLAGS.warmup, FLAGS.steps)
  if not FLAGS.json:
    for name, value in result.items():
      print(f'{name:16s} {value}')
  else:
    print(json.dumps(result))


if __name__ == '__main__':
  app.run(main)

r"""Evaluation throughput of one experiment config beside its training step rate.

  python experiments/bench_eval.py --config=configs/digits/ect.py [--nfe=1] [--batches=4] [--inception_batch=32]

Prints one JSON object:
  train_steps_per_s     training steps per second (median step time after warm-up; batch train.batch_size)
  train_examples_per_s  the same in examples
  sample_per_s          samples per second of the evaluation sampler (evaluate.generate_batches: one key per sample,
                        eval.batch_size a call) at --nfe, after its compilation
  sampler_compiles      how many times that sampler was compiled over --batches batches (1: no per-batch recompile)
  inception_per_s       FID Inception-v3 images per second at 299 x 299 (random weights: the cost is the same)
  inception_compiles    the same count for the Inception
  sample_flops / inception_flops   compiled FLOPs of one sampling call / one Inception call
Parameters are freshly initialised: throughput does not depend on training. Times depend on the machine, so compare
them as ratios taken in one run.
"""
import json
import statistics
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from fewstep_jax.eval import evaluate, features, inception
from fewstep_jax import trainer
from fewstep_jax.train import sharding

config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.DEFINE_integer('nfe', 1, 'Sampler NFE.')
flags.DEFINE_integer('batches', 4, 'Timed sampling batches (after one untimed).')
flags.DEFINE_integer('inception_batch', 32, 'Images per Inception call.')
flags.DEFINE_integer('train_steps', 10, 'Timed training steps (after 2 untimed).')
flags.mark_flags_as_required(['config'])
FLAGS = flags.FLAGS


def _flops(jitted, *args) -> float:
  analysis = jitted.lower(*args).compile().cost_analysis()
  return float(analysis.get('flops', 0.0)) if isinstance(analysis, dict) else None


def main(argv):
  del argv
  config = FLAGS.config
  run = trainer.Run(config)
  state = run.init_state()
  train_step = run.make_train_step(**run.method.step_options(0))
  times = []
  for i in range(2 + FLAGS.train_steps):
    batch = run.next_global_batch()
    start = time.perf_counter()
    state, metrics = train_step(state, batch)
    jax.block_until_ready((state, metrics))
    if i >= 2:
      times.append(time.perf_counter() - start)
  step_s = statistics.median(times)

  params = run.sampling_params(state)
  batch_size = evaluate.eval_batch_size(config, run.mesh)
  n = batch_size * (FLAGS.batches + 1)
  stream = evaluate.generate_batches(run, params, FLAGS.nfe, n, config.eval.seed, batch_size)
  jax.block_until_ready(next(stream)[0])  # Compiles.
  start = time.perf_counter()
  for samples, _, _ in stream:
    jax.block_until_ready(samples)
  sample_per_s = FLAGS.batches * batch_size / (time.perf_counter() - start)
  sampler = evaluate.compiled_sampler(run, batch_size, FLAGS.nfe)
  indices = jax.device_put(np.arange(batch_size, dtype=np.int32), sharding.batch_sharding(run.mesh))
  key = jax.random.fold_in(run.sample_key, config.eval.seed)

  weights = jax.device_put(inception.random_weights(0), sharding.replicated(run.mesh))
  extract = features.sharded(features.inception_outputs, run.mesh, inception.RESOLUTION)
  images = jax.device_put(np.zeros((FLAGS.inception_batch,) + samples.shape[1:], np.float32))
  jax.block_until_ready(extract(weights, images))
  start = time.perf_counter()
  for _ in range(3):
    jax.block_until_ready(extract(weights, images))
  inception_per_s = 3 * FLAGS.inception_batch / (time.perf_counter() - start)
  print(json.dumps({
      'config': f'{config.method.name}/{config.data.name}/{config.network.name}', 'devices': jax.device_count(),
      'train_batch': config.train.batch_size, 'train_steps_per_s': 1.0 / step_s,
      'train_examples_per_s': config.train.batch_size / step_s,
      'nfe': FLAGS.nfe, 'eval_batch': batch_size, 'sample_per_s': sample_per_s,
      'sampler_compiles': sampler._cache_size(), 'sample_flops': _flops(sampler, params, key, indices),
      'inception_per_s': inception_per_s, 'inception_compiles': extract._cache_size(),
      'inception_flops': _flops(extract, weights, images)}))


if __name__ == '__main__':
  app.run(main)

r"""How many times evaluation compiles its sampler, and for how long, over a list of NFEs.

  python experiments/bench_sampler_compile.py --config=configs/digits/flow_matching.py [--nfes=1,2,4,10,50]
      [--compile_cache=DIR]

Draws one evaluation batch (evaluate.generate_batches, eval.batch_size samples) at each NFE in turn, as
--mode=eval does, from freshly initialised parameters (compilation does not depend on training), and prints one
JSON object:
  first_call_s      {nfe: wall seconds of that NFE's first batch (its compilation, if any, and one batch)}
  compiles          XLA compilations that took over --min_compile_s, over all NFEs (a sampler's, not small helpers')
  compile_s         their total seconds (backend compilation, as JAX reports it)
  cache_hits        programs loaded from the persistent compilation cache instead (with --compile_cache)
With a method whose sampler is an ODE solve, one compilation serves every NFE. Run it twice with the same
--compile_cache=DIR to see a re-run's compile time. Times depend on the machine: compare runs made one after the
other on an idle one.
"""
import json
import time

import jax
import jax.monitoring
from absl import app, flags
from ml_collections import config_flags

from fewstep_jax.eval import evaluate
from fewstep_jax import trainer

config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.DEFINE_list('nfes', ['1', '2', '4', '10', '50'], 'NFEs to sample at, in order.')
flags.DEFINE_float('min_compile_s', 0.5, 'Compilations shorter than this are not counted (small helpers).')
flags.DEFINE_string('compile_cache', '', 'Persistent compilation cache directory (empty: none).')
flags.mark_flags_as_required(['config'])
FLAGS = flags.FLAGS

COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'
CACHE_HIT_EVENT = '/jax/compilation_cache/cache_hits'


def main(argv):
  del argv
  if FLAGS.compile_cache:
    jax.config.update('jax_compilation_cache_dir', FLAGS.compile_cache)
  compile_seconds, cache_hits = [], []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, seconds, **_: compile_seconds.append(seconds) if event == COMPILE_EVENT else None)
  jax.monitoring.register_event_listener(lambda event, **_: cache_hits.append(1) if event == CACHE_HIT_EVENT else None)
  config = FLAGS.config
  run = trainer.Run(config)
  params = run.sampling_params(run.init_state())
  batch_size = evaluate.eval_batch_size(config, run.mesh)
  jax.block_until_ready(params)
  compile_seconds.clear()
  cache_hits.clear()
  first_call = {}
  for nfe in (int(n) for n in FLAGS.nfes):
    start = time.perf_counter()
    samples, _, _ = next(evaluate.generate_batches(run, params, nfe, batch_size, config.eval.seed, batch_size))
    jax.block_until_ready(samples)
    first_call[nfe] = time.perf_counter() - start
  counted = [s for s in compile_seconds if s > FLAGS.min_compile_s]
  print(json.dumps({'config': f'{config.method.name}/{config.data.name}/{config.network.name}',
                    'eval_batch': batch_size, 'first_call_s': first_call, 'compiles': len(counted),
                    'compile_s': sum(counted), 'cache_hits': len(cache_hits)}))


if __name__ == '__main__':
  app.run(main)

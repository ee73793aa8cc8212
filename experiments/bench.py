r"""Step-time and memory benchmark of one experiment config's training step.

  python experiments/bench.py --config=configs/digits/flow_matching.py [--config.train.batch_size=256] --json

Prints one JSON object:
  compile_s       seconds to lower and compile the jitted train step
  step_time_s     median wall time of a step (device work, blocked on), after warm-up
  flops           compiled cost analysis: FLOPs of one step
  bytes_accessed  compiled cost analysis: bytes read and written by one step
  temp_bytes      compiled memory analysis: temporary buffer bytes of one step
  data_s          median host input time per step (next batch + transfer to devices; 0 for device-side data):
                  only the wait for a batch the input thread has ready
  step_cpu_s      median process CPU seconds during a step (every core, any concurrent input thread included)
  minor_faults    median minor page faults of the process during a step (buffers the allocator maps afresh)
  matmul_fraction FLOPs / (step_cpu_s x --matmul_rate): the step's share of the machine's large-matmul rate
  max_rss_bytes   the process's peak resident memory at the end
  input_cpu_s     process CPU seconds per batch while only the input pipeline runs (its real cost, which data_s
                  hides behind the prefetch), over --input_batches batches; 0 for device-side data
FLOPs and bytes come from XLA and do not depend on machine noise; times do, so compare them as ratios taken in
one run on one machine.

  python experiments/bench.py --config=configs/digits/dmd2.py --passes [--config.method.teacher=runs/digits_edm]

For a score-distillation config (DMD2 and its relatives), --passes prints instead the compiled FLOPs of the
student update and of the critic update (method.student_update / critic_update, each jitted alone), and each
divided by the FLOPs of the network passes it needs, compiled one by one:
  student update  student forward + backward to its parameters, teacher forward(s) (two under CFG), critic
                  forward; with the GAN, critic (or teacher, gan_features=teacher) features + head forward and
                  backward to their input;
  critic update   student forward; critic forward + backward to its parameters; with the GAN, twice critic
                  features + head forward and backward to their parameters (generated and real images).
A ratio near 1 (at most 1.05) says that no network pass is computed twice and the rest (noise, losses, the
optimizer and EMA updates) is small.

Like the entry point, the benchmark restarts itself under fewstep_jax/allocator.py's settings (JSON field
allocator: 'tunables'); FEWSTEP_JAX_MALLOC=system measures the system allocator's defaults ('system').
"""
if __name__ == '__main__':
  from fewstep_jax import allocator
  allocator.reexec_with_tunables()

import json
import resource
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

from fewstep_jax import allocator
from fewstep_jax.methods.score_distillation import GAN_FEATURES
from fewstep_jax import trainer


def define_shared_flags():
  """--config (an experiment config file; --config.<field>=value overrides it) and --json, the flags that
  experiments/plan.py shares: defined when a script runs, not on import (a test imports these modules beside others
  that define a --config)."""
  config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
  flags.DEFINE_bool('json', False, 'Print only the JSON object.')


def define_flags():
  define_shared_flags()
  flags.DEFINE_integer('warmup', 3, 'Untimed steps after compilation.')
  flags.DEFINE_integer('steps', 20, 'Timed steps.')
  flags.DEFINE_float('matmul_rate', 72e9, 'FLOP/s of one core-second of a large jitted float32 matmul on this '
                     'machine (72e9: AMD Zen 3 with AVX2), for matmul_fraction.')
  flags.DEFINE_integer('input_batches', 20, 'Batches the input pipeline produces alone, for input_cpu_s.')
  flags.DEFINE_bool('passes', False, 'Score distillation: FLOPs of the student and critic updates over their network '
                    'passes.')


FLAGS = flags.FLAGS


def compiled_cost(compiled, key):
  """A figure of XLA's cost analysis of a compiled function ('flops', 'bytes accessed'): of one device's program
  when the function is partitioned over several (experiments/plan.py)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older JAX: one dict per computation.
    return float(sum(a.get(key, 0.0) for a in analysis))
  return float(analysis.get(key, 0.0))


def minor_faults() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def compile_step(config):
  """(run, its initial state, the compiled train step of step 0's kind, compile seconds)."""
  run = trainer.Run(config)
  state = run.init_state()
  # Step 0's kind: for a method with a schedule (a student updated every k-th step), the step updating every net.
  train_step = run.make_train_step(**run.method.step_options(0))
  batch = run.next_global_batch()
  start = time.perf_counter()
  compiled = train_step.lower(state, batch).compile()
  return run, state, compiled, time.perf_counter() - start


def time_steps(run, state, compiled, warmup: int, steps: int):
  """(state after the steps, medians of their data_s, step_time_s, step_cpu_s, minor_faults)."""
  rows = []
  for i in range(warmup + steps):
    start = time.perf_counter()
    batch = run.next_global_batch()
    jax.block_until_ready(batch)
    data_s = time.perf_counter() - start
    start, cpu, faults = time.perf_counter(), time.process_time(), minor_faults()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    if i >= warmup:
      rows.append((data_s, time.perf_counter() - start, time.process_time() - cpu, minor_faults() - faults))
  return state, {name: statistics.median(column) for name, column in
                 zip(('data_s', 'step_time_s', 'step_cpu_s', 'minor_faults'), zip(*rows))}


def input_cpu(run, batches: int) -> float:
  """Process CPU seconds per batch while the input pipeline alone runs: after a wait that lets its prefetch fill,
  the batches taken drain it and the pipeline refills it, so the CPU spent is the production of `batches`."""
  if run.next_global_batch() is None:
    return 0.0
  time.sleep(1.0)
  start = time.process_time()
  for _ in range(batches):
    jax.block_until_ready(run.next_global_batch())
  time.sleep(1.0)  # The refill of the prefetch buffer belongs to the batches taken.
  return (time.process_time() - start) / batches


def benchmark(config, warmup: int, steps: int, matmul_rate: float = 72e9, input_batches: int = 20) -> dict:
  run, state, compiled, compile_s = compile_step(config)
  state, times = time_steps(run, state, compiled, warmup, steps)
  flops = compiled_cost(compiled, 'flops')
  memory = compiled.memory_analysis()
  return {
      'config': config.method.name + '/' + config.data.name + '/' + config.network.name,
      'devices': jax.device_count(),
      'batch_size': config.train.batch_size,
      'compile_s': compile_s,
      'step_time_s': times['step_time_s'],
      'flops': flops,
      'bytes_accessed': compiled_cost(compiled, 'bytes accessed'),
      'temp_bytes': int(memory.temp_size_in_bytes) if memory is not None else None,
      'data_s': times['data_s'],
      'step_cpu_s': times['step_cpu_s'],
      'minor_faults': times['minor_faults'],
      'matmul_fraction': flops / (times['step_cpu_s'] * matmul_rate) if times['step_cpu_s'] else None,
      'input_cpu_s': input_cpu(run, input_batches) if input_batches else None,
      'max_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      'allocator': 'tunables' if allocator.active() else 'system',
  }


def _flops(fn, *args) -> float:
  return compiled_cost(jax.jit(fn).lower(*args).compile(), 'flops')


def distillation_passes(config) -> dict:
  """Compiled FLOPs of a score-distillation run's student and critic updates over the sum of their passes."""
  run = trainer.Run(config)
  method = run.method
  if not hasattr(method, 'critic_update'):
    raise ValueError(f'--passes needs a score-distillation method; {method.name!r} is not one')
  state = run.init_state()
  batch = run.next_global_batch()
  if batch is None:
    batch = run.data.device_sample(jax.random.PRNGKey(0), config.train.batch_size)
  key = jax.random.PRNGKey(0)
  nets, y = state.nets, batch.get('y')
  x = batch['x']
  sigma = jnp.full((x.shape[0],), 1.0)
  cotangent = jnp.ones_like(x)
  student, critic = nets['student'].params, nets['critic'].params

  def forward(params, x):
    return method.denoise(params, x, sigma, y)

  def forward_backward(params, x):  # Backward to the parameters only, as a generator or critic update needs.
    return jax.grad(lambda p: jnp.vdot(forward(p, x), cotangent))(params)

  def teacher(frozen, x):
    return method.real_denoiser(frozen, y)(x, sigma)

  # The head reads the bottleneck of the critic, or of the frozen teacher (method.gan_features).
  gan_network = lambda critic: GAN_FEATURES[config.method.gan_features](critic, state.frozen)

  def gan_to_input(critic, head, x):
    return jax.grad(lambda x: jnp.sum(method.head.module.apply({'params': head},
                                                               method.features(gan_network(critic), x, sigma, y))))(x)

  def gan_to_params(critic, head, x):
    return jax.grad(lambda p: jnp.sum(method.head.module.apply(
        {'params': p[1]}, method.features(gan_network(p[0]), x, sigma, y))))((critic, head))

  passes = {'student_forward_backward': _flops(forward_backward, student, x),
            'student_forward': _flops(forward, student, x),
            'teacher_forward': _flops(teacher, state.frozen, x),
            'critic_forward': _flops(forward, critic, x),
            'critic_forward_backward': _flops(forward_backward, critic, x)}
  student_sum = passes['student_forward_backward'] + passes['teacher_forward'] + passes['critic_forward']
  critic_sum = passes['student_forward'] + passes['critic_forward_backward']
  if 'head' in nets:
    head = nets['head'].params
    passes['gan_forward_backward_to_input'] = _flops(gan_to_input, critic, head, x)
    passes['gan_forward_backward_to_params'] = _flops(gan_to_params, critic, head, x)
    if config.method.gan_generator_weight > 0:
      student_sum += passes['gan_forward_backward_to_input']
    if config.method.gan_weight > 0:
      critic_sum += 2 * passes['gan_forward_backward_to_params']
  student_flops = _flops(method.student_update, state, batch, key)
  critic_flops = _flops(lambda s, b, k: method.critic_update(s, b, k)[0], state, batch, key)
  return {'config': config.method.name + '/' + config.data.name + '/' + config.network.name,
          'batch_size': config.train.batch_size, 'passes': passes,
          'student_update_flops': student_flops, 'student_passes_flops': student_sum,
          'student_ratio': student_flops / student_sum,
          'critic_update_flops': critic_flops, 'critic_passes_flops': critic_sum,
          'critic_ratio': critic_flops / critic_sum}


def main(argv):
  del argv
  if FLAGS.passes:
    result = distillation_passes(FLAGS.config)
  else:
    result = benchmark(FLAGS.config, FLAGS.warmup, FLAGS.steps, FLAGS.matmul_rate, FLAGS.input_batches)
  if not FLAGS.json:
    for name, value in result.items():
      print(f'{name:16s} {value}')
  else:
    print(json.dumps(result))


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  app.run(main)

"""The one trainer: builds mesh, data, method and state from the config, then runs the jitted step.

It knows nothing about what it trains: the method supplies init / step / sample (methods/base.py).
"""
import json
import os
import signal

import jax
import numpy as np

from fewstep_jax import data as data_lib
from fewstep_jax import methods
from fewstep_jax.train import sharding as sharding_lib
from fewstep_jax.train.checkpoint import Checkpointer
from fewstep_jax.train.teacher import write_run_info
from fewstep_jax.train.writers import MetricWriter

# Config blocks whose change makes an existing workdir's checkpoints incompatible (or silently different).
_RUN_DEFINING_BLOCKS = ('method', 'network', 'data')


class NonFiniteLossError(FloatingPointError):
  pass


class Run:
  """Everything a train / eval / sample job needs, built once from the config.

  Attributes: mesh, data (DataPipeline), method, abstract_state and shardings (for init and restore), keys.
  """

  def __init__(self, config):
    maybe_initialize_distributed(config.mesh)
    self.config = config
    self.mesh = sharding_lib.make_mesh(config.mesh)
    sharding_lib.check_batch_size(config.train.batch_size, config.train.micro_batches, self.mesh)
    self.data = data_lib.build_data(config.data, global_batch_size=config.train.batch_size,
                                    seed=config.train.seed)
    self.method = methods.build_method(config, data_shape=self.data.data_shape,
                                       num_classes=self.data.num_classes)
    root = jax.random.PRNGKey(config.train.seed)
    self.init_key, self.step_key, self.sample_key = jax.random.split(root, 3)
    self.abstract_state = jax.eval_shape(self.method.init, self.init_key)
    self.state_shardings = sharding_lib.state_shardings(self.abstract_state, self.mesh,
                                                        config.mesh.fsdp_min_size)

  def init_state(self):
    return jax.jit(self.method.init, out_shardings=self.state_shardings)(self.init_key)

  def make_train_step(self):
    """jit(state, batch) -> (state, metrics): per-step key from fold_in(step_key, step), donated state."""
    data, method, mesh = self.data, self.method, self.mesh
    batch_size = self.config.train.batch_size

    def train_step(state, batch):
      key = jax.random.fold_in(self.step_key, state.step)
      data_key, method_key = jax.random.split(key)
      if batch is None:  # Device-side data (toy): sampled here, from the step's key.
        batch = data.device_sample(data_key, batch_size)
        batch = jax.lax.with_sharding_constraint(batch, sharding_lib.batch_sharding(mesh))
      return method.step(state, batch, method_key)

    batch_shardings = None if data.kind == 'device' else sharding_lib.batch_sharding(mesh)
    return jax.jit(train_step, in_shardings=(self.state_shardings, batch_shardings),
                   out_shardings=(self.state_shardings, sharding_lib.replicated(mesh)),
                   donate_argnums=0)

  def next_global_batch(self):
    if self.data.kind == 'device':
      return None
    return sharding_lib.global_batch_from_process_batch(self.data.next_batch(), self.mesh)


def maybe_initialize_distributed(mesh_config):
  """Multi-host: connect the processes before any device is touched (CPU uses gloo collectives)."""
  if mesh_config.num_processes <= 1 or jax.distributed.is_initialized():
    return
  # Cross-process collectives of the CPU backend (tests, CPU clusters); accelerators ignore this setting.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=mesh_config.coordinator_address,
                             num_processes=mesh_config.num_processes,
                             process_id=mesh_config.process_id)


def config_to_json(config) -> dict:
  return json.loads(config.to_json_best_effort())


def check_workdir_matches(workdir: str, config):
  """Refuses to resume a workdir that was created by a run with different method / network / data."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return
  with open(path) as f:
    saved = json.load(f)
  current = config_to_json(config)
  changed = [f'{block}.{key}' for block in _RUN_DEFINING_BLOCKS
             for key in sorted(set(saved.get(block, {})) | set(current.get(block, {})))
             if saved.get(block, {}).get(key) != current.get(block, {}).get(key)]
  if changed:
    raise ValueError(
        f'workdir {workdir} holds a run with a different configuration ({", ".join(changed)} differ '
        f'from {path}). Resuming it would mix two experiments: use a new --workdir, or restore the '
        'original values.')


def _check_finite(step: int, metrics: dict):
  for name in sorted(metrics, key=lambda name: name != 'loss'):  # The loss is named first if it broke.
    value = metrics[name]
    if not np.all(np.isfinite(value)):
      raise NonFiniteLossError(
          f'non-finite {name} = {value} at step {step}. Training stopped; the last checkpoint written '
          'before this step is kept. Lower the learning rate, enable optim.grad_clip, or check the data.')


class _StopRequest:
  """SIGTERM / SIGINT set a flag; the loop finishes its step, saves and exits cleanly."""

  def __init__(self):
    self.requested = False
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    print(f'received signal {signum}: saving a checkpoint after the current step', flush=True)
    self.requested = True

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def train(config, workdir: str, *, on_sample=None):
  """Trains (or resumes) the run in `workdir`. Returns (run, final state, whether num_steps was reached).

  on_sample(run, state, step): called every train.sample_every steps and at the end (writes sample images).
  """
  os.makedirs(workdir, exist_ok=True)
  check_workdir_matches(workdir, config)
  run = Run(config)
  tc = config.train
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump(config_to_json(config), f, indent=2)
    write_run_info(workdir, run.data.data_shape, run.data.num_classes)

  checkpointer = Checkpointer(os.path.join(workdir, 'checkpoints'), tc.max_to_keep)
  start = checkpointer.latest_step()
  if start is None:
    start = 0
    state = run.init_state()
  else:
    print(f'resuming from the checkpoint at step {start}', flush=True)
    state, data_state = checkpointer.restore(start, run.abstract_state, run.state_shardings)
    run.data.set_state(data_state)
  config_json = config_to_json(config)
  writer = MetricWriter(workdir, start, tc.num_steps, tensorboard=tc.tensorboard)
  train_step = run.make_train_step()

  pending = []  # (step, device metrics) not yet fetched: they leave the device at log or checkpoint time.
  interval = []  # Fetched metrics since the last logged step; each log row holds their mean.

  def flush_metrics():
    for step_done, metrics in jax.device_get(pending):
      _check_finite(step_done, metrics)
      interval.append(metrics)
      if step_done % tc.log_every == 0 or step_done == tc.num_steps:
        writer.write(step_done, {name: float(np.mean([m[name] for m in interval])) for name in metrics})
        interval.clear()
    pending.clear()

  last_saved = [start]

  def save(step_done, force=False):
    flush_metrics()  # Never checkpoint a state whose loss went non-finite.
    checkpointer.save(step_done, state, run.data.get_state(), config_json, force=force)
    last_saved[0] = step_done

  step = start
  with _StopRequest() as stop:
    while step < tc.num_steps and not stop.requested:
      state, metrics = train_step(state, run.next_global_batch())
      step += 1
      pending.append((step, metrics))
      if step % tc.log_every == 0:
        flush_metrics()
      if step % tc.checkpoint_every == 0 or step == tc.num_steps:
        save(step)
      if on_sample is not None and (step == tc.num_steps or
                                    (tc.sample_every and step % tc.sample_every == 0)):
        on_sample(run, state, step)
    if stop.requested and last_saved[0] != step:
      save(step, force=True)
  flush_metrics()
  checkpointer.close()
  writer.close()
  if stop.requested:
    print(f'stopped by signal at step {step}; checkpoint saved, run the same command to resume',
          flush=True)
  return run, state, step >= tc.num_steps


def restore_latest(run: Run, workdir: str):
  """The latest checkpoint's TrainState for eval / sample; a clear error if there is none."""
  directory = os.path.join(workdir, 'checkpoints')
  checkpointer = Checkpointer(directory, max_to_keep=run.config.train.max_to_keep)
  step = checkpointer.latest_step()
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {directory}: train first (--mode=train) with this '
                            '--workdir, or point --workdir at a trained run.')
  state, _ = checkpointer.restore(step, run.abstract_state, run.state_shardings)
  checkpointer.close()
  return state, step


"""The one trainer: builds mesh, data, method and state from the config, then runs the jitted step.

It knows nothing about what it trains: the method supplies init / step / sample (methods/base.py).
"""
import functools
import json
import os
import shutil
import signal
import threading
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from fewstep_jax import data as data_lib
from fewstep_jax import methods, runs
from fewstep_jax.train import files, offload, optim
from fewstep_jax.train import sharding as sharding_lib
from fewstep_jax.errors import ConfigError, DiskFullError, InputNotFoundError, RunError, WorkdirInUseError
from fewstep_jax.train import checkpoint as checkpoint_lib
from fewstep_jax.train import workdir as workdir_lib
from fewstep_jax.train.checkpoint import Checkpointer, committed_steps
from fewstep_jax.train.state import count_params
from fewstep_jax.train.writers import MetricWriter

# Config fields (or whole blocks) that define a run: resuming a workdir with any of them changed would mix two
# experiments or break exact resume. Paths, logging, eval and mesh settings may change between restarts.
RUN_DEFINING_FIELDS = ('method', 'network', 'data.name', 'data.toy', 'data.tfds_name', 'data.image_size',
                       'data.pairs_dir', 'data.latent_scale', 'data.latent_norm', 'data.conditional',
                       'train.seed', 'train.batch_size', 'train.micro_batches', 'train.param_dtype',
                       'optim.name', 'optim.ema_rates', 'optim.ema_stds', 'lora')
# Run-defining fields added after runs were written, with the value their absence in a stored config.json means.
ADDED_FIELDS = {'optim.ema_stds': [], 'data.latent_norm': 'scale', 'network.dropout_res': 0,
                'network.forced_weight_norm': False, 'network.train_label_dropout': True,
                'network.middle_attention': True, 'network.remat': 'none', 'method.frozen_dtype': None,
                'lora.rank': 0, 'lora.alpha': 0.0, 'lora.targets': []}
# What eval / sample need to agree with: the fields that fix the checkpoint's shapes. Sampling options (guidance,
# solver) may change.
STATE_DEFINING_FIELDS = ('method.name', 'network', 'data.name', 'data.toy', 'data.tfds_name', 'data.conditional',
                         'data.image_size', 'optim.name', 'optim.ema_rates', 'optim.ema_stds', 'lora')


class NonFiniteLossError(RunError, FloatingPointError):
  pass


class Run:
  """Everything a train / eval / sample job needs, built once from the config.

  Attributes: mesh, data (DataPipeline), inputs (the method's resolved inputs: Teachers, parameters, arrays),
  frozen (their arrays, for init), method, abstract_state and shardings (for init and restore), keys.

  inputs: values for the method's declared inputs given directly (e.g. {'teacher': Teacher(...)} built from
  parameters); the others are read as the config names them. resolve=False (eval, sample) reads nothing: `inputs`
  are then the descriptions the run recorded, enough to build its method. data: a DataPipeline to use instead of the
  one config.data opens (experiments/plan.py: the shapes of a dataset that is not on this machine).
  """

  def __init__(self, config, inputs: dict | None = None, *, resolve: bool = True, data=None):
    maybe_initialize_distributed(config.mesh)
    self.config = config
    self.mesh = sharding_lib.make_mesh(config.mesh)
    sharding_lib.check_batch_size(config.train.batch_size, config.train.micro_batches, self.mesh)
    self.data = data if data is not None else data_lib.build_data(
        config.data, global_batch_size=config.train.batch_size, seed=config.train.seed)
    methods.require_data_images(config, self.data)
    shape, classes = self.data.data_shape, self.data.num_classes
    self.inputs = (runs.resolve_inputs(config, shape, classes, inputs, mesh=self.mesh,
                                       fsdp_min_size=config.mesh.fsdp_min_size) if resolve else dict(inputs or {}))
    self.method = methods.build_method(config, data_shape=shape, num_classes=classes, inputs=self.inputs,
                                       conditioning=self.data.conditioning)
    root = jax.random.PRNGKey(config.train.seed)
    self.init_key, self.step_key, self.sample_key = jax.random.split(root, 3)
    self.frozen = runs.frozen_values(self.inputs)
    self.abstract_state = jax.eval_shape(self.method.init, self.init_key, self.frozen)
    self.state_shardings = sharding_lib.state_shardings(self.abstract_state, self.mesh,
                                                        config.mesh.fsdp_min_size)
    # Training places the offloaded parts in host memory; restore, eval and sampling use state_shardings.
    self.offload = offload.parts_named(config.mesh.get('offload', ''))
    offload.check_backend(self.offload, self.mesh.devices.flat)
    if config.network.get('remat', 'none') == 'dots_offload':
      offload.check_backend(('activations',), self.mesh.devices.flat, "network.remat='dots_offload'")
    self.train_shardings = offload.host_shardings(self.state_shardings, self.offload)

  def init_state(self):
    return jax.jit(self.method.init, out_shardings=self.train_shardings)(self.init_key, self.frozen)

  def to_train_placement(self, state):
    """A state restored under state_shardings with its offloaded parts moved to host memory."""
    return jax.device_put(state, self.train_shardings) if self.offload else state

  def sampling_params(self, state, name: str | None = None):
    """method.sampling_params(state, name) in device memory (an offloaded EMA copy or teacher is copied in)."""
    return offload.device_copy(self.method.sampling_params(state, name))

  def make_train_step(self, **options):
    """jit(state, batch) -> (state, metrics): per-step key from fold_in(step_key, step), donated state.
    options: static keyword arguments of method.step (see `Method.step_options`)."""
    data, method, mesh = self.data, self.method, self.mesh
    batch_size = self.config.train.batch_size

    def train_step(state, batch, data_params):
      key = jax.random.fold_in(self.step_key, state.step)
      data_key, method_key = jax.random.split(key)
      if batch is None:  # Device-side data (toy): sampled here, from the step's key.
        batch = data.device_sample(data_key, batch_size)
        batch = jax.lax.with_sharding_constraint(batch, sharding_lib.batch_sharding(mesh))
      else:  # Host batches that are distributions (latent moments) are sampled here, token ids encoded.
        batch = data.on_device(data_key, batch, data_params)
      # Offloaded frozen networks come to the device for the step; the host copy is returned as it was given.
      frozen = state.frozen
      state = state.replace(frozen=offload.to_device(frozen))
      # The mesh in context lets kernels that XLA cannot partition (Pallas
      # attention) run per batch shard under shard_map.
      with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        state, metrics = method.step(state, batch, method_key, **options)
      return state.replace(frozen=frozen), metrics

    batch_shardings = None if data.kind == 'device' else sharding_lib.batch_sharding(mesh)
    shardings = dict(out_shardings=(self.train_shardings, sharding_lib.replicated(mesh)), donate_argnums=0)
    data_params = self.data_params
    if data_params is None:
      return jax.jit(functools.partial(train_step, data_params=None),
                     in_shardings=(self.train_shardings, batch_shardings), **shardings)
    # Frozen arrays the data's on_device reads (text encoders run in the step) are arguments, placed once, so that
    # XLA neither embeds them in the program as constants nor copies them each step.
    jitted = jax.jit(train_step, in_shardings=(self.train_shardings, batch_shardings, sharding_lib.replicated(mesh)),
                     **shardings)
    return lambda state, batch: jitted(state, batch, data_params)

  @functools.cached_property
  def data_params(self):
    """The data's device_params() replicated over the mesh, or None."""
    params = getattr(self.data, 'device_params', lambda: None)()
    return None if params is None else jax.device_put(params, sharding_lib.replicated(self.mesh))

  def step_dispatcher(self):
    """(state, batch, step) -> (state, metrics): the train step for host step `step` (= state.step), jitted once
    per distinct `method.step_options(step)`: a method whose steps differ on a fixed schedule (a critic updated every
    step, a student every k-th) gets one compiled function per kind of step instead of a traced lax.cond, whose
    branches XLA:CPU runs several times slower than the same computation unconditioned."""
    compiled = {}

    def train_step(state, batch, step: int):
      options = self.method.step_options(step)
      signature = tuple(sorted(options.items()))
      if signature not in compiled:
        compiled[signature] = self.make_train_step(**options)
      return compiled[signature](state, batch)

    return train_step

  def next_global_batch(self):
    if self.data.kind == 'device':
      return None
    return sharding_lib.global_batch_from_process_batch(self.data.next_batch(), self.mesh)


def maybe_initialize_distributed(mesh_config):
  """Multi-host: connect the processes before any device is touched. mesh.num_processes > 1 uses the
  explicit coordinator fields; 0 lets JAX detect the cluster (TPU pods, SLURM, Kubernetes)."""
  if mesh_config.num_processes == 1 or jax.distributed.is_initialized():
    return
  # Cross-process collectives of the CPU backend (tests, CPU clusters); accelerators ignore this setting.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if mesh_config.num_processes == 0:
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(coordinator_address=mesh_config.coordinator_address,
                               num_processes=mesh_config.num_processes,
                               process_id=mesh_config.process_id)


def config_to_json(config) -> dict:
  return json.loads(config.to_json_best_effort())


def _flatten(tree: dict, prefix: str = '') -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def run_defining_fields(config) -> tuple:
  """RUN_DEFINING_FIELDS, plus train.num_steps where the student's learning-rate schedule runs over it, plus the
  fields the method declares (`Method.run_defining_fields`: its other optimizers' schedules, a curriculum)."""
  extra = ('train.num_steps',) if optim.spans_the_run(config.optim) else ()
  extra += methods.method_class(config.method.name).run_defining_fields(config)
  return RUN_DEFINING_FIELDS + tuple(dict.fromkeys(field for field in extra if field not in RUN_DEFINING_FIELDS))


def check_workdir_matches(workdir: str, config, fields=RUN_DEFINING_FIELDS):
  """Refuses to continue (or evaluate) a workdir created by a run that differs in `fields`."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return
  saved = _flatten(files.read_json(path))
  current = _flatten(config_to_json(config))
  for key, absent in ADDED_FIELDS.items():  # Written before the field existed: it had its old meaning.
    if key in current:
      saved.setdefault(key, absent)
  changed = sorted(key for key in set(saved) | set(current)
                   if any(key == field or key.startswith(field + '.') for field in fields)
                   and saved.get(key) != current.get(key))
  if changed:
    why = (' train.num_steps sets the length of this run\'s learning-rate schedule or discretisation curriculum, '
           'so changing it on resume would rescale the rest of the run.' if 'train.num_steps' in changed else '')
    raise ConfigError(
        f'workdir {workdir} holds a run with a different configuration: '
        + ', '.join(f'{key} = {saved.get(key)!r} there, {current.get(key)!r} now' for key in changed)
        + '.' + why + ' Use a new --workdir, or restore the original values.')


def _check_finite(step: int, metrics: dict):
  for name in sorted(metrics, key=lambda name: name != 'loss'):  # The loss is named first if it broke.
    value = metrics[name]
    if not np.all(np.isfinite(value)):
      raise NonFiniteLossError(
          f'non-finite {name} = {value} at step {step}. Training stopped; the last checkpoint written '
          'before this step is kept. Lower the learning rate, enable optim.grad_clip, or check the data.')


class _StopRequest:
  """SIGTERM / SIGINT set a flag; the loop finishes its step, saves and exits cleanly.

  With several processes, all must stop at the same step (a process that stopped alone would leave the others
  waiting in a collective): they agree, with one small all-gather, at every `sync_every`-th step.
  """

  def __init__(self, sync_every: int):
    self.requested = False
    self.sync_every = sync_every
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():  # Elsewhere (a notebook's worker) Python refuses.
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    print(f'received signal {signum}: saving a checkpoint after the current step', flush=True)
    self.requested = True

  def should_stop(self, step: int) -> bool:
    if jax.process_count() == 1:
      return self.requested
    if step % self.sync_every:
      return False
    flags = multihost_utils.process_allgather(np.asarray(self.requested, np.int32))
    return bool(np.any(flags))

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class _MetricBuffer:
  """Per-step device metrics: fetched only at log and checkpoint time, checked for non-finite values, and
  averaged into one row per logged step. The steps since the last row travel with each checkpoint, so a
  resumed run logs the same rows as an uninterrupted one."""

  def __init__(self, writer: MetricWriter, log_every: int, num_steps: int, interval=(), learning_rate=None):
    self.writer, self.log_every, self.num_steps = writer, log_every, num_steps
    self.learning_rate = learning_rate  # step -> the student's lr, logged with each row.
    self.pending = []  # (step, device metrics) not fetched yet.
    self.interval = list(interval)  # Fetched metrics (name -> float) since the last logged row.

  def add(self, step: int, metrics):
    self.pending.append((step, metrics))

  def flush(self):
    for step, metrics in jax.device_get(self.pending):
      _check_finite(step, metrics)
      self.interval.append({name: float(value) for name, value in metrics.items()})
      if step % self.log_every == 0 or step == self.num_steps:
        row = {name: float(np.mean([m[name] for m in self.interval])) for name in metrics}
        if self.learning_rate is not None:
          row['lr'] = self.learning_rate(step)
        self.writer.write(step, row)
        self.interval = []
    self.pending = []


def _restore_for_training(run, checkpointer):
  """(start step, state, data state, log interval) to continue from: the newest readable checkpoint, or
  train.resume_step. Damaged steps, and with resume_step the steps after it, are moved aside (not deleted), so
  that the run's next saves of those steps do not collide with them. A resume_step already applied (recorded in
  checkpoints_set_aside/resumed_from) is not applied again: rerunning the same command continues the run."""
  resume_step = run.config.train.get('resume_step', 0)
  applied = os.path.join(os.path.dirname(checkpointer.directory), checkpoint_lib.SET_ASIDE, 'resumed_from')
  if resume_step and os.path.exists(applied) and files.read_json(applied).get('step') == resume_step:
    print(f'train.resume_step={resume_step} was applied by an earlier start of this run; continuing from its '
          'newest checkpoint', flush=True)
    resume_step = 0
  start, restored = checkpointer.restore_newest(run.abstract_state, run.state_shardings, step=resume_step)
  if start is None:
    return 0, None, None, []
  if jax.process_index() == 0:
    checkpointer.set_aside(checkpointer.damaged, 'damaged')
    checkpointer.set_aside(checkpoint_lib.uncommitted_steps(checkpointer.directory), 'uncommitted')
    checkpointer.set_aside([s for s in checkpointer.committed_steps() if s > start], 'after_resume_step')
    if resume_step:
      os.makedirs(os.path.dirname(applied), exist_ok=True)
      files.write_json(applied, {'step': resume_step})
  state, data_state, interval = restored
  return start, state, data_state, interval


def _lock_workdir(workdir: str):
  """Process 0 takes the workdir's lock; every process learns whether it got it (a refused multi-host run stops
  on all its processes, rather than leaving the others waiting in a collective)."""
  lock, error = None, None
  if jax.process_index() == 0:
    try:
      lock = workdir_lib.WorkdirLock(workdir).acquire()
    except WorkdirInUseError as refused:
      error = refused
  if jax.process_count() > 1:
    refused = multihost_utils.process_allgather(np.asarray(error is not None, np.int32))
    if np.any(refused) and error is None:
      raise WorkdirInUseError(f'{workdir} is in use by another trainer (process 0 was refused its lock)')
  if error is not None:
    raise error
  return lock


def _check_free_space(directory: str, needed: int, last_step):
  free = shutil.disk_usage(directory).free
  if free < needed:
    kept = f'the last checkpoint (step {last_step}) is kept' if last_step else 'no checkpoint was written yet'
    raise DiskFullError(f'not enough free space in {directory} for the next checkpoint: it needs about '
                        f'{needed / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free; {kept}. Free space (or '
                        'lower train.max_to_keep) and run the same command to resume.')


def train(config, workdir: str | None, *, on_sample=None, inputs: dict | None = None, on_built=None):
  """Trains (or resumes) the run in `workdir`. Returns (run, final state, whether num_steps was reached).

  workdir=None trains in memory (a notebook): no checkpoints, metrics file or lock; nothing is written.
  on_sample(run, state, step): called every train.sample_every steps and at the end (writes sample images).
  inputs: values of the method's declared inputs given directly, e.g. {'teacher': inputs.Teacher(...)} built from a
  parameter pytree and a network config; the rest are read as the config names them.
  on_built(run): called once the Run is built, before any state is made or restored: checks that need the built
  method (the NFEs the end of training samples at), so that a bad setting stops the run before it trains.
  """
  if not methods.method_class(config.method.name).trains:
    raise ConfigError(f'method {config.method.name!r} trains nothing: it samples its inputs; run it with '
                      '--mode=sample (or --mode=eval)')
  if workdir is None:
    run = Run(config, inputs)
    if on_built is not None:
      on_built(run)
    return _train(config, None, on_sample, run=run)
  os.makedirs(workdir, exist_ok=True)
  check_workdir_matches(workdir, config, run_defining_fields(config))
  run = Run(config, inputs)
  if on_built is not None:
    on_built(run)
  lock = _lock_workdir(workdir)
  try:
    return _train(config, workdir, on_sample, run=run, lock=lock)
  except OSError as error:
    full = checkpoint_lib.find_disk_full(error)
    if full is None or isinstance(error, DiskFullError):
      raise
    raise checkpoint_lib.disk_full_error(workdir, full) from None
  finally:
    if lock is not None:
      lock.release()


def _train(config, workdir, on_sample, run=None, lock=None):
  run = run or Run(config)
  tc = config.train
  config_json = config_to_json(config)
  checkpointer = None
  start, state, interval = 0, None, []
  if workdir is not None:
    checkpointer = Checkpointer(os.path.join(workdir, 'checkpoints'), tc.max_to_keep)
    start, state, data_state, interval = _restore_for_training(run, checkpointer)
    if state is not None:
      print(f'resuming from the checkpoint at step {start}', flush=True)
      run.data.set_state(data_state)
      state = run.to_train_placement(state)
  if state is None:
    state = run.init_state()
  if workdir is not None and jax.process_index() == 0:  # Only once the state exists: a failed resume keeps the old.
    files.write_json(os.path.join(workdir, 'config.json'), config_json)
    runs.write_run_info(workdir, run.method, state, run.inputs)
  for name, net in state.nets.items():
    print(f'{name}: {count_params(net.params):,} parameters', flush=True)
  writer = MetricWriter(workdir, start, tc.num_steps, tensorboard=tc.tensorboard)
  metrics_buffer = _MetricBuffer(writer, tc.log_every, tc.num_steps, interval, run.method.learning_rate)
  train_step = run.step_dispatcher()
  state_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(state))

  def save(step_done, force=False):
    metrics_buffer.flush()  # Never checkpoint a state whose loss went non-finite.
    if checkpointer is None:
      return step_done
    checkpointer.wait()  # The previous save is committed (its errors surface here) before space is counted.
    last = checkpointer.latest_step()
    # The newest step's size on disk (the state's bytes before the first save), with 5% to spare.
    needed = checkpoint_lib.directory_bytes(os.path.join(checkpointer.directory, str(last))) if last else state_bytes
    _check_free_space(checkpointer.directory, int(needed * 1.05) + 2 ** 20, last)
    checkpointer.save(step_done, state, run.data.get_state(), metrics_buffer.interval, config_json, force=force)
    return step_done

  step = last_saved = start
  stopped = False
  if start < tc.num_steps:
    print(f'compiling the train step (the first step waits for it), then steps {start + 1} to {tc.num_steps}, '
          f'a line every {tc.log_every}', flush=True)
  try:
    with _StopRequest(sync_every=tc.log_every) as stop:
      while step < tc.num_steps and not stopped:
        began = time.time()
        state, metrics = train_step(state, run.next_global_batch(), step)
        step += 1
        if step == start + 1:
          jax.block_until_ready(metrics)
          print(f'step {step}: compiled and ran in {time.time() - began:.1f} s', flush=True)
        metrics_buffer.add(step, metrics)
        writer.advance(step)
        if step % tc.log_every == 0:
          metrics_buffer.flush()
          if lock is not None:
            lock.heartbeat()
        if step % tc.checkpoint_every == 0 or step == tc.num_steps:
          last_saved = save(step)
        if on_sample is not None and (step == tc.num_steps or
                                      (tc.sample_every and step % tc.sample_every == 0)):
          for path in on_sample(run, state, step) or ():
            if path.endswith('.png'):
              # step_0000020_nfe1_euler.png -> samples/nfe1_euler: one image series per NFE and sampler.
              writer.write_image('samples/nfe' + os.path.basename(path)[:-len('.png')].split('_nfe')[-1], path, step)
        stopped = stop.should_stop(step)
      if stopped and last_saved != step:
        last_saved = save(step, force=True)
    metrics_buffer.flush()
  finally:  # Also on errors: finish the asynchronous save in flight, so the last good checkpoint is whole.
    try:
      if checkpointer is not None:
        checkpointer.close()
    finally:
      writer.close()
  if stopped:
    print(f'stopped by signal at step {step}; checkpoint saved, run the same command to resume',
          flush=True)
  return run, state, step >= tc.num_steps


def require_checkpoint(workdir: str):
  """A clear error unless `workdir` holds a committed checkpoint."""
  directory = os.path.join(workdir, 'checkpoints')
  if not committed_steps(directory):
    raise InputNotFoundError(f'no checkpoint in {directory}: train first (--mode=train) with this '
                             '--workdir, or point --workdir at a trained run.')


def restore_run(config, workdir: str, on_built=None):
  """(run, state, step) of the newest checkpoint in `workdir` for eval / sample: the run built as it was trained,
  from the teachers it recorded (nothing but its own parameters is read), and `restore_latest`'s state.
  on_built(run): called once the Run is built, before its parameters are read (see `train`). A method that trains
  nothing (Method.trains False: a teacher's sampler) has no checkpoint: `untrained_run`'s (run, state, 0)."""
  if not methods.method_class(config.method.name).trains:
    return untrained_run(config, on_built)
  require_checkpoint(workdir)
  _, info = runs.read_run_info(workdir)
  run = Run(config, runs.recorded_teachers(info), resolve=False)
  if on_built is not None:
    on_built(run)
  state, step = restore_latest(run, workdir)
  return run, state, step


def untrained_run(config, on_built=None):
  """(run, state, 0) of a method that trains nothing, built from `config` with its inputs read as the config names
  them (a teacher run's parameters); its state is `Method.init` of those inputs, made without copying them."""
  run = Run(config)
  if on_built is not None:
    on_built(run)
  return run, run.method.init(run.init_key, run.frozen), 0


def restore_latest(run: Run, workdir: str):
  """The student's parameters of the newest readable checkpoint (or train.resume_step's) for eval / sample, as a
  TrainState that holds only them (every EMA copy and the raw parameters; no optimizer state, no teacher; a LoRA
  run's merged over their base), and its step; a clear error if there is none. Reads only: damaged steps are
  reported and skipped, never moved."""
  require_checkpoint(workdir)
  check_workdir_matches(workdir, run.config, STATE_DEFINING_FIELDS)
  _, info = runs.read_run_info(workdir)
  names = ['params'] + sorted(info['parameters']['ema'])
  step, params = runs.restore_parameters(workdir, info, names, mesh=run.mesh,
                                         fsdp_min_size=run.config.mesh.fsdp_min_size,
                                         step=run.config.train.get('resume_step', 0),
                                         max_to_keep=run.config.train.max_to_keep, merged=True)
  opened = runs.TrainedRun(workdir, run.config, info, run.method, step, params)
  return opened.state(), step

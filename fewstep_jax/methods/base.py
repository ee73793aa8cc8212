"""What every method provides, and the shared machinery of the methods that train one network.

A method is built from the config and the values of the inputs it declares:
  inputs(config) -> {name: spec}   (classmethod) what it reads besides its batch, as data (fewstep_jax/inputs.py):
                                   a teacher run, a run to start from, stored arrays; resolved by fewstep_jax.runs
  Method(config, data_shape=..., num_classes=..., inputs={name: Teacher}, conditioning=...)
  init(key, frozen) -> TrainState  frozen: the resolved parameters and arrays ({} to learn shapes only)
  step(state, batch, key, **step_options(step)) -> (state, metrics)
                                   pure; the trainer jits it once per distinct step_options
  sampling_plan(nfe, conditional, guidance=None, solver=None, grid=None) -> sampling.SamplingPlan
                                   the arrays of an NFE and the static sampling options; a ValueError (its reason)
                                   where the sampler cannot spend exactly nfe network calls
  sample(params, key, n, plan, labels=None, noise=None) -> samples [n, *data_shape]
                                   along a plan (traced in the evaluator: one compiled sampler for every NFE)
  sampling_params(state, name=None) -> the parameters `sample` uses (an EMA copy by default)
  readout                          how another run reads this method's network (paths.Readout), or None
  teaches                          whether that reading is a denoiser / velocity field that can teach
A method that trains one network subclasses `SingleNetworkMethod` and writes `loss(params, batch, key, ctx)` and its
sampler (`sampling_plan`, `sample`); everything the loss reads besides its parameters, batch and key is in `ctx` (a
StepContext). A method that trains several (a student, a critic, a discriminator) subclasses
roles.MultiNetworkMethod.
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from fewstep_jax import couplings, nn, sampling
from fewstep_jax.conditions import Conditioning
from fewstep_jax.errors import ConfigError
from fewstep_jax.inputs import InitInput, TeacherInput
from fewstep_jax.nn import lora as lora_lib
from fewstep_jax.train import offload
from fewstep_jax.train import state as state_lib
from fewstep_jax.train.optim import make_schedule
from fewstep_jax.train.trained import TrainedNetwork


def check_choice(hparams, field: str, choices):
  """A clear error unless hparams[field] is one of `choices` (a registry dict or a sequence of names)."""
  if hparams[field] not in choices:
    raise ValueError(f'unknown method.{field} {hparams[field]!r}; known: {sorted(choices)}')


def frozen_network_names(specs: dict) -> tuple:
  """The names of the declared inputs (Method.inputs) that are frozen networks: every teacher, and the parameters of
  a run that stay frozen (InitInput.frozen: TCM's stage-1 model); not a student's starting point, nor arrays."""
  return tuple(name for name, spec in specs.items()
               if isinstance(spec, TeacherInput) or (isinstance(spec, InitInput) and spec.frozen))


def frozen_dtype_named(name):
  """The dtype of method.frozen_dtype (None: frozen networks stay as loaded); a ConfigError for an unknown name."""
  if name is None:
    return None
  if name not in nn.DTYPES:
    raise ConfigError(f'unknown method.frozen_dtype {name!r}; use None (keep them as loaded) or one of '
                      f'{sorted(nn.DTYPES)}')
  return nn.DTYPES[name]


def cast_floats(tree, dtype):
  """`tree` with its floating-point leaves in `dtype` (integer leaves, e.g. a step count, unchanged)."""
  return jax.tree.map(lambda leaf: leaf.astype(dtype) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf, tree)


def require_teacher(inputs, method_name: str, name: str = 'teacher'):
  """The Teacher `inputs[name]`; a clear error when the method was built without it."""
  if not inputs or name not in inputs:
    raise ValueError(f'method {method_name!r} learns from a teacher: set --config.method.{name}=WORKDIR (a trained '
                     f"run), or pass inputs={{'{name}': fewstep_jax.inputs.Teacher(...)}}.")
  return inputs[name]


def batch_rows(batch: dict) -> int:
  """The number of examples in `batch` (its 'x' rows, or its conditions' where a data-free batch has no 'x')."""
  return jax.tree.leaves(batch)[0].shape[0]


def accumulate_gradients(loss_fn, params, batch: dict, key, micro_batches: int):
  """Mean gradient and metrics of `loss_fn(params, batch, key) -> (loss, metrics)` over micro-batches.

  batch: dict of [B, ...] arrays. Micro-batch m holds examples m, m + M, m + 2M, ... so that each one stays
  spread over every device of a batch-sharded mesh. Micro-batch m uses key fold_in(key, m).
  """
  return accumulate(jax.grad(loss_fn, has_aux=True), params, batch, key, micro_batches)


def accumulate(grad_fn, params, batch: dict, key, micro_batches: int):
  """The mean over micro-batches (as `accumulate_gradients` splits them) of `grad_fn(params, batch, key) ->
  (gradient, metrics)`, any function of that form: a loss's gradient, or several terms' gradients combined."""
  if micro_batches == 1:
    return grad_fn(params, batch, key)

  def split(x):
    return x.reshape(x.shape[0] // micro_batches, micro_batches, *x.shape[1:]).swapaxes(0, 1)

  micro = jax.tree.map(split, batch)

  def add_micro_batch(total, inputs):
    index, micro_batch = inputs
    result = grad_fn(params, micro_batch, jax.random.fold_in(key, index))
    return jax.tree.map(jnp.add, total, result), None

  first = jax.tree.map(lambda x: x[0], micro)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                       jax.eval_shape(grad_fn, params, first, key))
  total, _ = jax.lax.scan(add_micro_batch, zeros, (jnp.arange(micro_batches), micro))
  return jax.tree.map(lambda x: x / micro_batches, total)


class StepContext(NamedTuple):
  """What a loss reads besides its trained parameters, batch and key; no gradient flows into any of it.

  step: the training step (int32); frozen: the resolved inputs' parameters and arrays (a teacher's as
  frozen['teacher']); target: the target network's parameters of a self-distilling loss (None: the live
  parameters); nets: the parameters of the other trained networks (score distillation's roles); extra: the
  state's running statistics (state.extra) a loss reads.
  """
  step: Any = 0
  frozen: dict = {}
  target: Any = None
  nets: dict = {}
  extra: dict = {}


class Method:
  """Base of every method: the config, the data description and the declared features."""
  name = None          # Set by the registry; an instance takes config.method.name (a preset's name).
  readout = None       # paths.Readout of the network, for runs that start from or distil this one.
  teaches = False      # Whether `readout` predicts a denoiser or velocity field (E[x | z]) another method can learn.
  uses_coupling = False  # Whether the method pairs noise with data by method.coupling (couplings.py).
  trains = True        # False: a sampler of its inputs (a teacher's own samples), opened for eval and sample without
                       # a checkpoint (trainer.restore_run); training it is refused.
  trains_lora = False  # Whether config.lora may adapt its trained network (SingleNetworkMethod; nn/lora.py).

  @classmethod
  def defaults(cls) -> ml_collections.ConfigDict:
    """The method's hyperparameters (config.method.*), each with its default."""
    return ml_collections.ConfigDict()

  @classmethod
  def inputs(cls, config) -> dict:
    """What the run reads besides its batch, as specs (fewstep_jax/inputs.py) by name; none by default."""
    del config
    return {}

  @classmethod
  def reads_data_images(cls, config) -> bool:
    """Whether a step reads the batch's data samples 'x' (most methods learn from them); a data-free method (a
    distillation that reads only its teacher) trains on batches of conditions alone, e.g. a prompt list."""
    del config
    return True

  @classmethod
  def run_defining_fields(cls, config) -> tuple:
    """Config fields beyond the trainer's that define this run (resuming a workdir with them changed is refused):
    train.num_steps where a schedule or curriculum of the method's runs over it. None by default."""
    del config
    return ()

  def __init__(self, config, *, data_shape: tuple, num_classes: int, inputs: dict | None = None,
               conditioning: Conditioning | None = None):
    """num_classes: the label count of the data (0: unlabelled); conditioning: what samples are conditioned on
    (conditions.py; default: those labels); inputs: the resolved values of `inputs(config)` (fewstep_jax.runs)."""
    self.name = config.method.name
    self.config = config
    self.hparams = config.method
    self.data_shape = tuple(data_shape)
    self.num_classes = num_classes
    self.conditioning = conditioning or Conditioning.of_labels(num_classes)
    self.given_inputs = dict(inputs or {})  # Not `inputs`: that is the classmethod declaring them.
    self.frozen_dtype = frozen_dtype_named(self.hparams.get('frozen_dtype'))
    if config.get('lora') is not None and config.lora.rank and not self.trains_lora:
      raise ConfigError(f'lora.rank={config.lora.rank}, but method {self.name!r} does not train LoRA factors (a '
                        'single-network method that starts its student from a run does); set lora.rank=0')
    if self.uses_coupling:
      couplings.check_coupling(self.hparams.coupling)
      if self.hparams.coupling != 'independent':
        self.conditioning.require_classes(f'method.coupling={self.hparams.coupling!r} (pairs noise within classes)')

  def frozen_to_store(self, frozen: dict) -> dict:
    """`frozen` as the state keeps it: its frozen networks (`frozen_network_names`) cast once to
    method.frozen_dtype, the rest (arrays, a student's starting point) as given."""
    return self._frozen_networks_in(frozen, self.frozen_dtype)

  def frozen_to_use(self, frozen: dict) -> dict:
    """state.frozen as the losses read it (StepContext.frozen): frozen networks stored in method.frozen_dtype are
    cast back to float32 at use, so every layer computes as with float32 parameters (only the weights' rounding
    differs) and no network needs to know its parameters' dtype."""
    return self._frozen_networks_in(frozen, jnp.float32)

  def _frozen_networks_in(self, frozen: dict, dtype) -> dict:
    """`frozen` with its frozen networks cast to `dtype`; `frozen` itself without method.frozen_dtype."""
    if self.frozen_dtype is None:
      return frozen
    networks = frozen_network_names(type(self).inputs(self.config))
    return {name: cast_floats(value, dtype) if name in networks else value for name, value in frozen.items()}

  def draw_noise(self, key, x, y=None):
    """eps ~ N(0, I) shaped like x [B, ...], re-paired with x by the minibatch coupling `method.coupling`
    (couplings.py; within classes when labels y [B] are given) where the method uses one."""
    eps = jax.random.normal(key, x.shape, x.dtype)
    coupling = self.hparams.coupling if self.uses_coupling else 'independent'
    return couplings.couple(coupling, jax.random.fold_in(key, 1), x, eps, y)

  # --- Sampling: what the evaluator, the sample grids and the tools call. ---

  ode_solvers = ()  # The solvers of an ODE sampler (eval.solvers, stored grids: sampler_grids.py); () elsewhere.

  def sampling_plan(self, nfe: int, conditional: bool, guidance=None, solver=None, grid=None):
    """The sampling.SamplingPlan of `sample` with `nfe` network calls for labelled (conditional) samples or not:
    a ValueError saying why where the sampler cannot spend exactly nfe (an odd NFE under CFG). guidance: the CFG
    scale (default the method's); solver, grid: an ODE sampler's solver and stored grid (`ode_solvers`)."""
    raise NotImplementedError

  def sample(self, params, key, n: int, plan, labels=None, noise=None):
    """Samples [n, *data_shape] along `plan` (from `sampling_plan`; its arrays may be traced), labels [n] or None,
    from `noise` [n, *data_shape] ~ N(0, I) where given (else drawn from key)."""
    raise NotImplementedError

  def sample_at(self, params, key, n: int, nfe: int, labels=None, noise=None, **options):
    """`sample` with the plan of `nfe` calls (options: sampling_plan's guidance, solver, grid)."""
    return self.sample(params, key, n, self.sampling_plan(nfe, labels is not None, **options), labels, noise=noise)

  def check_no_ode_options(self, solver, grid):
    """A few-step sampler's refusal of an ODE solver or a stored grid."""
    if solver is not None or grid is not None:
      raise ValueError(f'{self.name} samples with its own few-step sampler: it takes no ODE solver or stored grid '
                       '(eval.solvers, eval.sampler_grids)')

  def trained_nfes(self, conditional: bool):
    """The NFEs the sampler is trained to spend (a k-step student: k, two calls a step under CFG), or None: any NFE
    (an ODE solve, multistep consistency sampling, a flow map's jumps). Sampling at another NFE works but asks the
    network for levels it never learnt (a one-step generator re-noised to an intermediate level)."""
    del conditional
    return None

  def step_options(self, step: int) -> dict:
    """Static keyword arguments of `step` at host step `step` (hashable values; none by default). The trainer
    compiles one step function per distinct value, so that a fixed schedule costs no traced branch."""
    del step
    return {}

  def update_count_offset(self) -> int:
    """The student updates of an earlier run that its learning-rate schedule and power-function EMA continue
    from (0: they start with this run)."""
    return 0

  def learning_rate(self, step: int) -> float:
    """The student's learning rate after `step` training steps (logged as `lr`)."""
    return float(make_schedule(self.config.optim, self.config.train.num_steps, self.update_count_offset())(step))

  def sampling_params(self, state, name: str | None = None):
    """The student's parameters used for sampling: `name` ('params' or an EMA copy such as 'ema_0.999'),
    by default config.eval.params."""
    net = state.nets['student']
    name = self.config.eval.params if name is None else name
    if name == 'params':
      return net.params
    if name not in net.ema:
      raise ValueError(f"eval.params={name!r} is not an EMA copy of this run; available: "
                       f"{['params'] + sorted(net.ema)}")
    return net.ema[name]


def check_eval_params(config):
  """config.eval.params must name the student's parameters or one of its EMA copies: fail before training, not at
  the first sample grid."""
  rates, stds = tuple(config.optim.ema_rates), tuple(config.optim.get('ema_stds', ()))
  available = ['params'] + state_lib.ema_names(rates, stds)
  if config.eval.params not in available:
    raise ValueError(f'eval.params={config.eval.params!r} names no parameters of this run '
                     f'(optim.ema_rates={rates}, optim.ema_stds={stds}); use one of {available}.')


class SingleNetworkMethod(Method):
  """One trained network, the student (`self.student`, a TrainedNetwork: module, optimizer, EMA copies).

  Subclasses implement `loss(params, batch, key, ctx) -> (scalar loss, metrics dict)` and `sample`, and declare:
    uses_logvar      their network returns (output, log-variance);
    starts_from_run  method.init_from may name a trained run to start the student from (InitInput);
    target_network   the target theta- their loss reads as ctx.target: None (no target); 'ema_copy' (the student's
                     EMA copy at rate method.target_ema, which must be one of optim.ema_rates; 0: the live
                     parameters); 'own_ema' (a float32 copy in state.extra['target'] moved after every step at the
                     rate `own_target_rate(step)`, which returns None for theta- = sg(theta)).
  """
  uses_logvar = False
  starts_from_run = False
  target_network = None
  trains_lora = True

  @classmethod
  def readout_of(cls, config):
    """The readout of this method's network under `config` (paths.Readout), or None."""
    del config
    return None

  @classmethod
  def inputs(cls, config):
    specs = super().inputs(config)
    if cls.starts_from_run and config.method.init_from:
      readout = cls.readout_of(config)
      specs['student_init'] = InitInput(config.method.init_from, readout=readout.name if readout else '')
    return specs

  def __init__(self, config, **build):
    super().__init__(config, **build)
    self.readout = self.readout_of(config)
    self.student = TrainedNetwork.from_config(config, num_classes=self.num_classes,
                                              count_offset=self.update_count_offset())
    self.apply = self.student.apply
    self.lora = lora_lib.from_config(config, base=self._lora_base(config))
    self.student.trains_adapters = self.lora is not None
    check_eval_params(config)
    if config.network.get('logvar_head', False) and not self.uses_logvar:
      raise ValueError(f'network.logvar_head=True, but method {self.name!r} does not use a learned '
                       'log-variance; set --config.network.logvar_head=False.')
    if self.target_network == 'ema_copy':
      rate = self.hparams.target_ema
      if rate and rate not in self.student.ema_rates:
        raise ValueError(f'method.target_ema={rate} is not among optim.ema_rates={self.student.ema_rates}; add '
                         'it there, or set method.target_ema=0 to build targets from the live parameters.')

  def _lora_base(self, config) -> str:
    """The frozen input the student's LoRA factors merge over (config.lora): the teacher itself where the student
    starts from the teacher's run (one copy in memory), else the start, kept frozen as 'student_init'."""
    if not config.get('lora') or not config.lora.rank:
      return ''
    if not (self.starts_from_run and config.method.get('init_from')):
      raise ConfigError(f'lora.rank={config.lora.rank} adapts a network, but method {self.name!r} starts its student '
                        'from nothing: set method.init_from to the run or weights to adapt (the teacher\'s), or '
                        'lora.rank=0')
    same = 'teacher' in type(self).inputs(config) and config.method.get('teacher') == config.method.init_from
    return 'teacher' if same else 'student_init'

  def network_params(self, params, frozen: dict):
    """The parameters the network runs on: `params` itself, or with LoRA (config.lora) its base in `frozen` merged
    with the trained factors `params`."""
    return params if self.lora is None else lora_lib.merge(self.lora, frozen[self.lora.base], params)

  def init(self, key, frozen=None) -> state_lib.TrainState:
    frozen = dict(frozen or {})
    params = frozen.pop('student_init', None)
    if self.lora is not None:
      if params is None:  # A run built without its inputs (eval, sample, planning): the base's shapes only.
        params = self.student.init_params(key, self.data_shape)
      if self.lora.base == 'student_init':
        frozen['student_init'] = params
      net = self.student.init_adapters(self.lora, params, key)
      return state_lib.TrainState(step=jnp.zeros((), jnp.int32), nets={'student': net},
                                  frozen=self.frozen_to_store(frozen), extra=self._target_extra(net))
    if params is None:
      params = self.student.init_params(key, self.data_shape)
    net = self.student.init(params)
    return state_lib.TrainState(step=jnp.zeros((), jnp.int32), nets={'student': net},
                                frozen=self.frozen_to_store(frozen), extra=self._target_extra(net))

  def sampling_params(self, state, name: str | None = None):
    """Method.sampling_params; with LoRA, that copy of the factors merged over its base. A state restored for eval
    or sampling (trainer.restore_latest) holds the merged parameters already, and no base."""
    params = super().sampling_params(state, name)
    if self.lora is None or self.lora.base not in state.frozen:
      return params
    frozen = self.frozen_to_use({self.lora.base: offload.device_copy(state.frozen[self.lora.base])})
    return jax.jit(self.network_params)(offload.device_copy(params), frozen)

  def _target_extra(self, net) -> dict:
    """state.extra's own target, a float32 copy of the trained parameters (target_network 'own_ema'), or {}."""
    if self.target_network == 'own_ema' and self.own_target_rate(jnp.zeros((), jnp.int32)) is not None:
      return {'target': jax.tree.map(lambda p: p.astype(jnp.float32), net.params)}
    return {}

  def own_target_rate(self, step):
    """target_network 'own_ema': the target's EMA rate at `step` (traced), or None for theta- = sg(theta)."""
    raise NotImplementedError

  def context(self, state) -> StepContext:
    """The one place a loss's context is built from the state."""
    target = None
    frozen = self.frozen_to_use(state.frozen)
    if self.target_network == 'ema_copy' and self.hparams.target_ema:
      # An EMA copy kept in host memory (mesh.offload='ema') comes to the device for the loss.
      target = offload.to_device(state.nets['student'].ema[state_lib.ema_name(self.hparams.target_ema)])
    elif self.target_network == 'own_ema':
      target = state.extra.get('target')
    if target is not None:
      target = self.network_params(target, frozen)
    return StepContext(step=state.step, frozen=frozen, target=target)

  def loss(self, params, batch, key, ctx=StepContext()):
    raise NotImplementedError

  def gradients(self, state, batch, key):
    """(gradient of the loss with respect to the student's parameters, metrics) over the micro-batches."""
    ctx = self.context(state)
    return accumulate_gradients(lambda params, batch, key: self.loss(self.network_params(params, ctx.frozen), batch,
                                                                     key, ctx),
                                state.nets['student'].params, batch, key, self.config.train.micro_batches)

  def step(self, state, batch, key, **gradient_options):
    """One student update; gradient_options go to `gradients` (a subclass's static choices)."""
    net = state.nets['student']
    grads, metrics = self.gradients(state, batch, key, **gradient_options)
    new_net = self.student.apply_gradients(net, grads, count=state.step)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    new_state = state.replace(step=state.step + 1, nets={**state.nets, 'student': new_net})
    if 'target' in state.extra and self.target_network == 'own_ema':
      rate = self.own_target_rate(state.step)
      target = jax.tree.map(lambda t, p: rate * t + (1.0 - rate) * p.astype(t.dtype), state.extra['target'],
                            new_net.params)
      new_state = new_state.replace(extra={**new_state.extra, 'target': target})
      metrics['target_ema'] = rate
    return new_state, metrics


class ConsistencySampler:
  """Multistep consistency sampling of `consistency_fn(params, x, time, y) -> x0` on `path`: one call at the path's
  noise end `start_time` (x = start_scale eps), then re-noising to `intermediate_times` and calling again, with
  TCD's gamma and CFG (`guidance`) by default from the method's hparams (sample_gamma, guidance)."""

  def __init__(self, consistency_fn, path, *, start_time: float, start_scale: float, intermediate_times,
               data_shape: tuple, conditioning: Conditioning, guidance: float, gamma: float):
    self.consistency_fn = consistency_fn
    self.path = path
    self.start_time = float(start_time)
    self.start_scale = float(start_scale)
    self.intermediate_times = tuple(float(t) for t in intermediate_times)
    self.data_shape = tuple(data_shape)
    self.conditioning = conditioning
    self.guidance = guidance
    self.gamma = gamma

  def schedule(self, nfe: int):
    """The times of an `nfe`-call sampler: start_time, then `intermediate_times`, then (past them) evenly spaced
    times between the last of those and 0."""
    if nfe < 1:
      raise ValueError(f'nfe must be at least 1, got {nfe}')
    times = [self.start_time] + list(self.intermediate_times)[:nfe - 1]
    extra = nfe - len(times)
    return times + [times[-1] * (extra - i) / (extra + 1) for i in range(extra)]

  def sampling_plan(self, nfe, conditional: bool, guidance=None, gamma=None):
    """The SamplingPlan of `sample` with `nfe` network calls: `schedule`'s times, the CFG scale and TCD's gamma."""
    guidance = self.guidance if guidance is None else guidance
    gamma = self.gamma if gamma is None else gamma
    if not 0.0 <= gamma <= 1.0:
      raise ValueError(f'gamma must be in [0, 1], got {gamma}')
    times = self.schedule(sampling.drift_evaluations(nfe, True if conditional else None, guidance))
    return sampling.SamplingPlan(sampling.consistency_plan(times), guidance=guidance, gamma=gamma)

  def sample(self, params, key, n, plan, labels=None, noise=None):
    """Samples [n, *data_shape] along `plan` (two calls a step under CFG); eps = `noise` if given."""
    noise_key, sample_key = jax.random.split(key)
    eps = jax.random.normal(noise_key, (n,) + self.data_shape) if noise is None else noise
    x0_fn = self.conditioning.guided(lambda x, time, y: self.consistency_fn(params, x, time, y=y), labels,
                                     plan.guidance)
    return sampling.consistency_sample(x0_fn, self.path, plan.steps, self.start_scale * eps, sample_key, plan.gamma)


class ConsistencySampled:
  """For a method whose sampler is `self.sampler`, a ConsistencySampler: its sampling_plan and sample (mixed in
  before Method)."""

  def sampling_plan(self, nfe, conditional, guidance=None, solver=None, grid=None, gamma=None):
    self.check_no_ode_options(solver, grid)
    return self.sampler.sampling_plan(nfe, conditional, guidance, gamma)

  def sample(self, params, key, n, plan, labels=None, noise=None):
    return self.sampler.sample(params, key, n, plan, labels, noise)


def teacher_model(teacher, path, kind: str, guidance: float, conditioning: Conditioning):
  """(params, y) -> ((z, time) -> the Teacher's prediction `kind` [B, ...] on `path` at conditions y), converted
  exactly from its readout and guided with `guidance` (two teacher calls when != 1)."""
  predict = teacher.prediction(path, kind)
  return lambda params, y: conditioning.guided(lambda z, time, y: predict(params, z, time, y=y), y, guidance)


# EDM's noise levels (Karras et al. 2022): the data's standard deviation and the Karras grid's ends and rho; the
# hyperparameters of every method on EDM sigma.
EDM_SIGMA_DEFAULTS = dict(sigma_data=0.5, sigma_min=0.002, sigma_max=80.0, rho=7.0)

TEACHER_DEFAULTS = dict(
    teacher='',              # Workdir of the trained teacher run.
    teacher_guidance=1.0,    # CFG scale of the teacher's predictions (two teacher calls when != 1).
    frozen_dtype=None,       # 'bfloat16': the teacher stored in it, used in float32 (docs/scaling.md).
)

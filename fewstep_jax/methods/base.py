"""What every method provides, and the shared machinery for methods that train one network.

A method is an object built from the config with
  init(key, frozen) -> TrainState                  frozen: the dict `frozen_params()` returned
  frozen_params() -> dict of parameters loaded from other runs (a teacher; 'student_init' to start from)
  step(state, batch, key, **step_options(step)) -> (state, metrics)
                                                   pure; the trainer jits it once per distinct step_options
  sample(state_params, key, n, nfe, labels=None) -> samples [n, *data_shape]
  sampling_params(state) -> the parameters `sample` should use (an EMA copy by default)
A method that trains one network subclasses `SingleNetworkMethod` and writes only `loss` and `sample`.
"""
import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import optax

from fewstep_jax import couplings, nn, paths, sampling
from fewstep_jax.train import state as state_lib
from fewstep_jax.train.optim import make_optimizer, make_schedule

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def _dtype(name: str):
  if name not in DTYPES:
    raise ValueError(f'unknown dtype {name!r}; use one of {sorted(DTYPES)}')
  return DTYPES[name]


def accumulate_gradients(loss_fn, params, batch: dict, key, micro_batches: int):
  """Mean gradient and metrics of `loss_fn(params, batch, key) -> (loss, metrics)` over micro-batches.

  batch: dict of [B, ...] arrays. Micro-batch m holds examples m, m + M, m + 2M, ... so that each one stays
  spread over every device of a batch-sharded mesh. Micro-batch m uses key fold_in(key, m).
  """
  grad_fn = jax.grad(loss_fn, has_aux=True)
  if micro_batches == 1:
    return grad_fn(params, batch, key)

  def split(x):
    return x.reshape(x.shape[0] // micro_batches, micro_batches, *x.shape[1:]).swapaxes(0, 1)

  micro = jax.tree.map(split, batch)

  def accumulate(total, inputs):
    index, micro_batch = inputs
    result = grad_fn(params, micro_batch, jax.random.fold_in(key, index))
    return jax.tree.map(jnp.add, total, result), None

  first = jax.tree.map(lambda x: x[0], micro)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                       jax.eval_shape(grad_fn, params, first, key))
  total, _ = jax.lax.scan(accumulate, zeros, (jnp.arange(micro_batches), micro))
  return jax.tree.map(lambda x: x / micro_batches, total)


class Method:
  """Base of every method: holds the config and the data description."""
  name = None
  # What the raw network predicts (a key of paths.PRECONDITIONINGS: 'edm', 'trigflow', 'flow'), for methods that
  # start from another run's parameters and must read its network the same way; None where no such key fits.
  parameterization = None

  @classmethod
  def defaults(cls) -> ml_collections.ConfigDict:
    """The method's hyperparameters (config.method.*), each with its default."""
    return ml_collections.ConfigDict()

  def __init__(self, config, *, data_shape: tuple, num_classes: int):
    self.config = config
    self.hparams = config.method
    self.data_shape = tuple(data_shape)
    self.num_classes = num_classes
    if 'coupling' in self.hparams:
      couplings.check_coupling(self.hparams.coupling)

  def draw_noise(self, key, x, y=None):
    """eps ~ N(0, I) shaped like x [B, ...], re-paired with x by the minibatch coupling `method.coupling`
    (couplings.py; within classes when labels y [B] are given)."""
    eps = jax.random.normal(key, x.shape, x.dtype)
    return couplings.couple(self.hparams.get('coupling', 'independent'), jax.random.fold_in(key, 1), x, eps, y)

  def step_options(self, step: int) -> dict:
    """Static keyword arguments of `step` at host step `step` (hashable values; none by default). The trainer
    compiles one step function per distinct value, so that a fixed schedule costs no traced branch."""
    del step
    return {}

  def learning_rate(self, step: int) -> float:
    """The student's learning rate after `step` training steps (logged as `lr`)."""
    return float(make_schedule(self.config.optim, self.config.train.num_steps)(step))

  def frozen_params(self) -> dict:
    """Parameters the run reads from other runs, loaded once on the host: name -> params. They enter
    `init` as an argument (not as constants baked into the compiled init) and are kept in state.frozen, except
    'student_init', which only initialises the student."""
    return {}

  def load_teacher(self, workdir: str, expect_network=None):
    """(method, params) of the trained run in `workdir` as this run's teacher; its data (shape and label count)
    must be this run's, and with expect_network (a network ConfigDict) so must its network."""
    method, params = load_run_params(workdir, 'teacher', expect_network=expect_network, expect_data=self.config.data)
    if (tuple(method.data_shape), method.num_classes) != (self.data_shape, self.num_classes):
      raise ValueError(f'method.teacher={workdir!r} was trained on data of shape {method.data_shape} with '
                       f'{method.num_classes} classes; this run has {self.data_shape} and {self.num_classes}.')
    return method, params

  def flow_velocity(self, params, z, t, y=None):
    """As a teacher: the velocity dz/dt [B, ...] of the linear path z_t = (1 - t) x + t eps at flow time t [B],
    converted exactly from the method's own parameterisation. Methods that cannot serve as teachers raise."""
    raise ValueError(f'method {self.name!r} cannot serve as a teacher: it has no velocity field')

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
  rates = tuple(config.optim.ema_rates)
  available = ['params'] + [state_lib.ema_name(rate) for rate in rates]
  if config.eval.params not in available:
    raise ValueError(f'eval.params={config.eval.params!r} names no parameters of this run '
                     f'(optim.ema_rates={rates}); use one of {available}.')


class SingleNetworkMethod(Method):
  """One trained network ('student') with one optimizer and EMA copies.

  Subclasses implement `loss(params, batch, key, **loss_kwargs(state)) -> (scalar loss, metrics dict)` and
  `sample`, and set
  `uses_logvar` if their network returns (output, log-variance).
  """
  uses_logvar = False

  def __init__(self, config, *, data_shape, num_classes):
    super().__init__(config, data_shape=data_shape, num_classes=num_classes)
    self.param_dtype = _dtype(config.train.param_dtype)
    self.network = nn.build_network(config.network, num_classes=num_classes,
                                    dtype=_dtype(config.train.compute_dtype))
    self.apply = nn.make_apply(self.network)
    self.tx = make_optimizer(config.optim, config.train.num_steps)
    self.ema_rates = tuple(config.optim.ema_rates)
    check_eval_params(config)
    if config.network.get('logvar_head', False) and not self.uses_logvar:
      raise ValueError(f'network.logvar_head=True, but method {self.name!r} does not use a learned '
                       'log-variance; set --config.network.logvar_head=False.')

  def init(self, key, frozen=None) -> state_lib.TrainState:
    frozen = dict(frozen or {})
    params = frozen.pop('student_init', None)
    if params is None:
      example = jnp.zeros((1,) + self.data_shape, jnp.float32)
      params = nn.init_params(self.network, key, example)
    params = jax.tree.map(lambda p: p.astype(self.param_dtype), params)
    return state_lib.TrainState(
        step=jnp.zeros((), jnp.int32),
        nets={'student': state_lib.init_net_state(params, self.tx, self.ema_rates)},
        frozen=frozen, extra={})

  def frozen_params(self):
    """Adds 'student_init' when the method has `method.init_from` and it names a run (see `load_init`)."""
    frozen = super().frozen_params()
    if self.hparams.get('init_from'):
      frozen['student_init'] = self.load_init(self.hparams.init_from)
    return frozen

  def load_init(self, workdir: str):
    """The parameters of the trained run in `workdir` to start the student from. Its network config (up to
    PARAMETER_FREE_NETWORK_FIELDS) and its parameterisation must be this run's, so that they mean the same here."""
    method, params = load_run_params(workdir, 'init_from', expect_network=self.config.network,
                                     expect_data=self.config.data)
    if method.parameterization != self.parameterization:
      raise ValueError(
          f'method.init_from={workdir!r} is a {method.name!r} run whose network predicts in the '
          f'{method.parameterization!r} parameterisation; this {self.name!r} run uses {self.parameterization!r}.'
          + (' Set --config.method.parameterization to match.' if 'parameterization' in self.hparams else ''))
    return params

  def loss(self, params, batch, key):
    raise NotImplementedError

  def loss_kwargs(self, state) -> dict:
    """What `loss` reads from the state besides the trained parameters (no gradient flows into it): by
    default the frozen parameters (a teacher) as frozen=..., when there are any."""
    return {'frozen': state.frozen} if state.frozen else {}

  def step(self, state, batch, key):
    net = state.nets['student']
    loss_fn = functools.partial(self.loss, **self.loss_kwargs(state))
    grads, metrics = accumulate_gradients(loss_fn, net.params, batch, key,
                                          self.config.train.micro_batches)
    updates, opt_state = self.tx.update(grads, net.opt_state, net.params)
    params = optax.apply_updates(net.params, updates)
    new_net = state_lib.NetState(params=params, opt_state=opt_state,
                                 ema=state_lib.update_ema(net.ema, params, self.ema_rates))
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    return state.replace(step=state.step + 1, nets={**state.nets, 'student': new_net}), metrics


class ConsistencySampling:
  """Sampling for a model with `consistency_fn(params, x, time, y) -> x0` on `self.path`: one call at the path's
  noise end (`start_time`, x = start_scale * eps), then multistep consistency sampling (TCD's gamma from
  hparams.sample_gamma) through `intermediate_times`, with CFG from hparams.guidance."""
  start_time: float
  start_scale: float
  intermediate_times: tuple

  def sample_schedule(self, nfe: int):
    """The times of an `nfe`-call sampler: start_time, then `intermediate_times`, then (past them) evenly spaced
    times between the last of those and 0."""
    if nfe < 1:
      raise ValueError(f'nfe must be at least 1, got {nfe}')
    times = [float(self.start_time)] + [float(t) for t in self.intermediate_times][:nfe - 1]
    extra = nfe - len(times)
    return times + [times[-1] * (extra - i) / (extra + 1) for i in range(extra)]

  def sample(self, params, key, n, nfe, labels=None, guidance=None, gamma=None, noise=None):
    """Samples [n, *data_shape] with `nfe` network calls (two a step under CFG) over `sample_schedule`; eps =
    `noise` if given."""
    guidance = self.hparams.guidance if guidance is None else guidance
    gamma = self.hparams.sample_gamma if gamma is None else gamma
    steps = sampling.drift_evaluations(nfe, labels, guidance)
    noise_key, sample_key = jax.random.split(key)
    eps = jax.random.normal(noise_key, (n,) + self.data_shape) if noise is None else noise
    x0_fn = guided(lambda x, time, y: self.consistency_fn(params, x, time, y=y), labels, guidance,
                   self.num_classes)
    return sampling.consistency_sample(x0_fn, self.path, self.sample_schedule(steps), self.start_scale * eps,
                                       sample_key, gamma)


class DistillsTeacher:
  """Mixin for methods that learn from a trained teacher run: `method.teacher` (its workdir) and
  `method.teacher_guidance` (TEACHER_DEFAULTS); frozen_params loads its method into self.teacher_method and its
  parameters into frozen['teacher']."""
  teacher_method = None

  def frozen_params(self):
    frozen = super().frozen_params()
    self.teacher_method, params = self.load_teacher(self.hparams.teacher)
    return {**frozen, 'teacher': params}

  def teacher_prediction(self, frozen, path, kind: str, y):
    """(z, time) -> the teacher's prediction `kind` [B, ...] on `path` at labels y, converted exactly from its
    linear-flow velocity and guided with method.teacher_guidance (two teacher calls when != 1)."""
    model = converted_prediction(self.teacher_method, path, kind)
    return guided(lambda z, time, y: model(frozen['teacher'], z, time, y=y), y, self.hparams.teacher_guidance,
                  self.num_classes)


def converted_prediction(method, path, kind: str):
  """(params, z, time, y=None) -> `method`'s prediction `kind` [B, ...] on `path`, converted exactly from its
  linear-flow velocity (any parameterisation, any path)."""
  return paths.reparameterize(
      lambda params, z_t, t, r=None, y=None, key=None: method.flow_velocity(params, z_t, t, y),
      paths.LinearFlowPath(), 'velocity', path, kind)


TEACHER_DEFAULTS = dict(
    teacher='',              # Workdir of the trained teacher run.
    teacher_guidance=1.0,    # CFG scale of the teacher's predictions (two teacher calls when != 1).
)


def drop_labels(key, y, probability: float, null_label: int):
  """Classifier-free guidance training: each label becomes the null label ∅ with `probability`."""
  if y is None or probability <= 0:
    return y
  drop = jax.random.bernoulli(key, probability, y.shape)
  return jnp.where(drop, null_label, y)


def guided(model, labels, guidance: float, null_label: int):
  """Classifier-free guidance around model(*args, y=labels) -> prediction:
  m_∅ + w (m_y - m_∅), with m_∅ the prediction for the null label; one call when unconditional or w = 1."""
  def guided_model(*args):
    cond = model(*args, y=labels)
    if labels is None or guidance == 1.0:
      return cond
    uncond = model(*args, y=jnp.full_like(labels, null_label))
    return uncond + guidance * (cond - uncond)
  return guided_model


def per_sample_mean(x):
  """Mean over every axis but the first: [B, ...] -> [B]."""
  return jnp.mean(x.reshape(x.shape[0], -1), axis=1)


def _as_json(config) -> dict:
  """A config as its JSON form: a run's stored config.json holds lists where a config file wrote tuples."""
  return json.loads(json.dumps(config.to_dict()))


# Network fields that change how the network runs but not its parameters: a run may start from (or distil) another
# whose values differ (ECT tunes an EDM model with more dropout; a teacher may use another attention kernel).
PARAMETER_FREE_NETWORK_FIELDS = ('dropout', 'attention')


def network_differences(a, b) -> list:
  """The network fields (sorted names) whose values differ between two network ConfigDicts, other than the
  PARAMETER_FREE_NETWORK_FIELDS."""
  a, b = _as_json(a), _as_json(b)
  return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in PARAMETER_FREE_NETWORK_FIELDS)


# The data fields that say which distribution a run learnt, per data.name.
DISTRIBUTION_FIELDS = {'toy': ('toy',), 'digits': ('image_size',), 'tfds': ('tfds_name', 'image_size')}


def data_differences(theirs, ours) -> list:
  """The data fields (sorted names) in which two runs' data configs describe different distributions. Reflow
  pairs are a teacher's own samples of its data, so they match any teacher."""
  if 'reflow_pairs' in (theirs.name, ours.name):
    return []
  fields = ('name',) + DISTRIBUTION_FIELDS.get(ours.name, ())
  return sorted(f'data.{field}' for field in fields if theirs.get(field) != ours.get(field))


def load_run_params(workdir: str, role: str, expect_network=None, expect_data=None):
  """(method, params) of the trained run in `workdir` (its EMA parameters by default), for `role` ('teacher',
  'init_from') in error messages. With expect_network (a network ConfigDict) the run's network must match it,
  so that its parameters fit the student; with expect_data (a data ConfigDict) its data must be the same
  distribution (a toy teacher of 8gaussians cannot teach moons)."""
  from fewstep_jax.train.teacher import load_trained  # Late import: teacher.py builds methods.
  if not workdir:
    raise ValueError(f'this method needs a trained run as its {role}: set --config.method.{role}=WORKDIR')
  method, params, _ = load_trained(workdir)
  if expect_data is not None and data_differences(method.config.data, expect_data):
    differ = data_differences(method.config.data, expect_data)
    raise ValueError(f'method.{role}={workdir!r} was trained on other data: '
                     + ', '.join(f'{field} = {method.config.data.get(field[5:])!r} there, '
                                 f'{expect_data.get(field[5:])!r} here' for field in differ)
                     + '. Train a teacher on this data, or set the same data fields.')
  differ = network_differences(method.config.network, expect_network) if expect_network is not None else []
  if differ:
    theirs, ours = _as_json(method.config.network), _as_json(expect_network)
    raise ValueError(f'method.{role}={workdir!r} has a different network: fields {differ} differ '
                     f'(run: {[theirs.get(k) for k in differ]}, this config: {[ours.get(k) for k in differ]}). '
                     'Use the same network config, or another run.')
  return method, params

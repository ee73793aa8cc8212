"""Methods that train several networks, written once: the roles and their TrainedNetworks, a static schedule of the
updates each step runs, each update's gradient, and the metrics of an idle update carried over.

A several-network method subclasses `MultiNetworkMethod` and, in its constructor, declares
  self.roles     {role: TrainedNetwork}   what it trains; 'student' is the network `sample` reads;
  self.updates   {name: Update}           each update: the roles whose parameters it changes and their gradient;
  self.schedule  Schedule                 which updates a step runs, and in which order;
and writes `init_params(key, frozen) -> {role: parameters}` and its losses. An update's metrics are logged under their
names, with the norm of its gradient as <its first role>_grad_norm. `loss_update` builds the common update,
the gradient of one loss of the roles' parameters over the train.micro_batches:

  self.updates = {'critic': loss_update(('critic',), self.critic_loss, micro),
                  'student': loss_update(('student',), self.student_loss, micro)}
  self.schedule = Schedule.every(5, always=('critic',), then=('student',))   # DMD2's two time-scale rule

A step runs its phase's updates in order; each sees the parameters the ones before it left (ctx.nets) and moves
its roles' optimizer states and EMA copies. The trainer compiles one step per phase (`step_options`): XLA:CPU runs
a traced lax.cond's branch about 8x slower than the same computation outside one (digits SiD student update: 3.3 s
against 0.42 s). Called without it, `step` picks the phase on device with lax.switch, one function for every step.
Every step logs every update's metrics; an update the step skipped reports its last values (state.extra['metrics']),
so the logged names never change. The step's key is split once per declared update, in declaration order.
"""
import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from fewstep_jax.methods.base import Method, StepContext, accumulate_gradients
from fewstep_jax.train import state as state_lib
from fewstep_jax.train.optim import make_schedule


@dataclasses.dataclass(frozen=True)
class Update:
  """roles: the roles whose parameters the update changes. gradients(params {role: params}, batch, key, ctx) ->
  (grads {role: grads}, metrics {name: scalar}). after(state, metrics) -> (state, metrics): what else the update
  moves once its roles are updated (a target network; running statistics, taken out of the logged metrics)."""
  roles: tuple
  gradients: Callable
  after: Callable | None = None


class Schedule:
  """Which updates a step runs: `phases`, each a tuple of update names run in that order; before step `start` the
  phase `before`, from it the phases of `pattern` in turn (pattern[(step - start) % len(pattern)], indices into
  phases). Every method here is of that form, so `phase` and `count_before` are closed forms that take a Python int
  (the trainer's static choice) or a traced step."""

  def __init__(self, phases, pattern=(0,), start: int = 0, before: int = 0):
    self.phases = tuple(tuple(phase) for phase in phases)
    self.pattern, self.start, self.before = tuple(pattern), int(start), int(before)

  @classmethod
  def every(cls, period: int, *, always, then, then_first: bool = False) -> 'Schedule':
    """`always` every step, and `then` too on steps where step % period == 0 (after `always`, or before it with
    then_first): the two time-scale rule."""
    together = tuple(then) + tuple(always) if then_first else tuple(always) + tuple(then)
    if period == 1:
      return cls([together])
    return cls([together, tuple(always)], pattern=(0,) + (1,) * (period - 1))

  def phase(self, step):
    """The phase index of `step` (int, or traced int32)."""
    if isinstance(step, int):
      return self.before if step < self.start else self.pattern[(step - self.start) % len(self.pattern)]
    after = jnp.asarray(self.pattern)[(step - self.start) % len(self.pattern)]
    return jnp.where(step < self.start, self.before, after)

  def count_before(self, runs: Callable, step):
    """How many steps before `step` (int or traced) ran a phase for which runs(phase names) is true."""
    counts = [int(runs(phase)) for phase in self.phases]
    cumulative = [0]  # cumulative[i]: the counted steps among the pattern's first i.
    for index in self.pattern:
      cumulative.append(cumulative[-1] + counts[index])
    period = len(self.pattern)
    if isinstance(step, int):
      since = max(step - self.start, 0)
      return min(step, self.start) * counts[self.before] + since // period * cumulative[-1] + cumulative[since % period]
    since = jnp.maximum(step - self.start, 0)
    return (jnp.minimum(step, self.start) * counts[self.before] + since // period * cumulative[-1]
            + jnp.asarray(cumulative)[since % period])


def loss_update(roles, loss, micro_batches: int, after=None) -> Update:
  """The update of `roles` by the gradient of loss(params {role: params}, batch, key, ctx) -> (scalar, metrics),
  averaged over micro-batches."""

  def gradients(params, batch, key, ctx):
    return accumulate_gradients(lambda p, b, k: loss(p, b, k, ctx), params, batch, key, micro_batches)
  return Update(tuple(roles), gradients, after)


class MultiNetworkMethod(Method):
  """Several trained roles (see the module docstring); subclasses set roles, updates and schedule, and write
  init_params(key, frozen) -> {role: params} (and init_extra, what they keep in state.extra)."""
  roles: dict = {}
  updates: dict = {}
  schedule: Schedule = Schedule([()])

  def init_params(self, key, frozen: dict) -> dict:
    raise NotImplementedError

  def init_extra(self, frozen: dict, params: dict) -> dict:
    """What the method keeps in state.extra besides the metrics, given the frozen inputs and the roles' initial
    parameters."""
    del frozen, params
    return {}

  def update_keys(self, key) -> dict:
    """{update: key}: the step's key split once per declared update, in declaration order."""
    return dict(zip(self.updates, jax.random.split(key, len(self.updates))))

  def role_updates(self, role: str, step):
    """How many updates `role` received before `step` (int or traced): its optimizer's count, and the count of
    the power-function EMA."""
    return self.schedule.count_before(
        lambda phase: any(role in self.updates[name].roles for name in phase), step)

  def role_num_updates(self, role: str) -> int:
    """The updates `role` receives in the run (train.num_steps steps): what its learning-rate schedule spans."""
    return int(self.role_updates(role, int(self.config.train.num_steps)))

  def learning_rate(self, step: int) -> float:
    """The student's learning rate after `step` training steps: its schedule counts its own updates."""
    schedule = make_schedule(self.config.optim, self.role_num_updates('student'), self.update_count_offset())
    return float(schedule(self.role_updates('student', step)))

  def step_options(self, step: int) -> dict:
    return {'phase': self.schedule.phase(int(step))}

  # --- State. ---

  def init(self, key, frozen=None) -> state_lib.TrainState:
    frozen = dict(frozen or {})
    params = self.init_params(key, frozen)
    nets = {role: self.roles[role].init(role_params) for role, role_params in params.items()}
    state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), nets=nets, frozen=self.frozen_to_store(frozen),
                                 extra=self.init_extra(frozen, params))
    if any(name not in frozen for name in type(self).inputs(self.config)):
      return state.replace(extra={**state.extra, 'metrics': {}})  # Inputs as descriptions (eval, sample): no step.
    return state.replace(extra={**state.extra, 'metrics': self._initial_metrics(state)})

  def _initial_metrics(self, state) -> dict:
    """Zeros for every metric every update reports (learnt from their shapes), the carry of an idle update."""
    batch = {'x': jnp.zeros((self.config.train.batch_size,) + self.data_shape, jnp.float32)}
    if self.conditioning.conditional:
      batch['y'] = self.conditioning.example(self.config.train.batch_size)
    metrics = {}
    for name in self.updates:
      shapes = jax.eval_shape(lambda s, name=name: self.run_update(name, s, batch, jax.random.PRNGKey(0))[1], state)
      metrics.update({metric: jnp.zeros(shape.shape, shape.dtype) for metric, shape in shapes.items()})
    return metrics

  def context(self, state) -> StepContext:
    """What every update's loss reads: the step, the frozen inputs, every role's parameters, state.extra."""
    return StepContext(step=state.step, frozen=self.frozen_to_use(state.frozen),
                       nets={role: net.params for role, net in state.nets.items()}, extra=state.extra)

  # --- The step. ---

  def run_update(self, name: str, state, batch, key):
    """(state with the update's roles moved, the update's metrics and each role's gradient norm)."""
    update = self.updates[name]
    params = {role: state.nets[role].params for role in update.roles}
    grads, metrics = update.gradients(params, batch, key, self.context(state))
    nets = {role: self.roles[role].apply_gradients(state.nets[role], grads[role],
                                                   count=self.role_updates(role, state.step))
            for role in update.roles}
    metrics = {**metrics, f'{update.roles[0]}_grad_norm': optax.tree.norm(grads)}
    state = state.replace(nets={**state.nets, **nets})
    if update.after is not None:
      state, metrics = update.after(state, metrics)
    return state, metrics

  def step(self, state, batch, key, phase=None):
    """phase: the index of the step's phase in schedule.phases (a Python int from `step_options`, so that the
    trainer compiles one step per phase); None picks it on device from state.step (lax.switch)."""
    if phase is None:
      branches = [functools.partial(self.step, batch=batch, key=key, phase=index)
                  for index in range(len(self.schedule.phases))]
      return jax.lax.switch(self.schedule.phase(state.step), branches, state)
    keys = self.update_keys(key)
    metrics = dict(state.extra['metrics'])
    for name in self.schedule.phases[phase]:
      state, update_metrics = self.run_update(name, state, batch, keys[name])
      metrics.update({metric: jnp.asarray(value, metrics[metric].dtype) for metric, value in update_metrics.items()})
    state = state.replace(step=state.step + 1, extra={**state.extra, 'metrics': metrics})
    return state, metrics

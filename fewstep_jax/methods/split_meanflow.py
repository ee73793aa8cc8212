"""SplitMeanFlow (Guo et al. 2025, "Interval Splitting Consistency in Few-Step Generative Modeling").

Average velocity u(z_t, r, t) as in MeanFlow (flow_map.py), trained without a JVP by the interval-splitting
identity (t - r) u(z_t, r, t) = (s - r) u(z_s, r, s) + (t - s) u(z_t, s, t). With s = (1 - lam) t + lam r,
lam ~ U(0, 1):

  u2 = u(z_t, s, t),   z_s = z_t - (t - s) u2,   u1 = u(z_s, r, s),   target = sg((1 - lam) u1 + lam u2)

for u(z_t, r, t), both u terms from the current parameters without gradient (two extra forward passes on that
part of the batch). The rest of the batch (`boundary_fraction`, a fixed slice of the randomly ordered batch)
trains the boundary u(z_t, t, t) = v with v the conditional velocity eps - x (from scratch) or a teacher's
velocity at (z_t, t) (distillation, `method.teacher` = a trained run's workdir; any teacher with a velocity
field: flow matching, EDM through the exact path conversion, MeanFlow). The teacher may be guided
(`teacher_guidance`, two teacher calls per sample), which bakes CFG into the student.

Choices the paper leaves open (ours, not confirmed against the paper): (r, t) sorted logit-normal pairs
(mean -0.4, std 1, MeanFlow's), boundary_fraction 0.5, squared error averaged over dimensions, 10% label
dropout; from scratch, guidance can be folded into the boundary target as in MeanFlow with kappa = 0:
v_g = w v + (1 - w) sg(u(z_t, t, t | ∅)) for labelled samples (`guidance` = w; 1 = off).
"""
import jax
import jax.numpy as jnp
import ml_collections

from fewstep_jax import paths, timesteps
from fewstep_jax.distances import per_sample_mean
from fewstep_jax.inputs import TeacherInput
from fewstep_jax.conditions import rows
from fewstep_jax.methods.base import StepContext, teacher_model
from fewstep_jax.methods.flow_map import AverageVelocityMethod
from fewstep_jax.methods.registry import register


@register('split_meanflow')
class SplitMeanFlow(AverageVelocityMethod):

  @classmethod
  def defaults(cls):
    return ml_collections.ConfigDict(dict(
        time_mean=-0.4,
        time_std=1.0,
        boundary_fraction=0.5,     # Share of the batch trained on u(z_t, t, t) = v.
        label_dropout=0.1,
        coupling='independent',    # Minibatch noise-data coupling: 'independent' | 'exact' | 'greedy'.
        guidance=1.0,              # From scratch: CFG folded into the boundary target (1 = off).
        teacher='',                # Workdir of a trained run whose velocity is the boundary target.
        teacher_guidance=1.0,      # CFG scale of the teacher's velocity (two teacher calls when != 1).
        frozen_dtype=None,         # 'bfloat16': the teacher stored in it, used in float32 (docs/scaling.md).
    ))

  @classmethod
  def inputs(cls, config):
    specs = super().inputs(config)
    if config.method.teacher:
      specs['teacher'] = TeacherInput(config.method.teacher)
    return specs

  def __init__(self, config, **build):
    super().__init__(config, **build)
    # Distillation (a teacher given): its velocity on the linear path, guided with teacher_guidance.
    self.teacher = self.given_inputs.get('teacher')
    if self.teacher is not None and self.hparams.guidance != 1.0:
      raise ValueError('method.guidance folds CFG into training from scratch; with a teacher use '
                       'method.teacher_guidance instead')
    if self.teacher is not None:
      self.teacher_velocity = teacher_model(self.teacher, self.path, 'velocity', self.hparams.teacher_guidance, self.conditioning)

  def num_split(self, batch: int) -> int:
    """How many samples (the first ones of the batch) train the splitting identity: a static size."""
    return batch - round(batch * self.hparams.boundary_fraction)

  def sample_times(self, key, n):
    """(r, s, t, lam), each [n]: sorted logit-normal pairs, then r = s = t on the boundary slice."""
    hp = self.hparams
    pair_key, lam_key = jax.random.split(key)
    r, t = timesteps.sample_ordered_pair(pair_key, n, hp.time_mean, hp.time_std)
    r = jnp.where(jnp.arange(n) < self.num_split(n), r, t)
    lam = jax.random.uniform(lam_key, (n,))
    return r, (1 - lam) * t + lam * r, t, lam

  def boundary_velocity(self, params, frozen, z, t, v, y):
    """v(z_t, t) [B, ...] without gradient, for labels y after dropout: the teacher's velocity (guided; for
    the null label guidance changes nothing), the folded-CFG mix for labelled samples, or v."""
    hp = self.hparams
    if self.teacher is not None:
      return jax.lax.stop_gradient(self.teacher_velocity(frozen['teacher'], y)(z, t))
    if y is None or hp.guidance == 1.0:
      return v
    return self.folded_guidance(params, z, t, v, y, hp.guidance, 0.0, self.conditioning.is_conditional(y))

  def split_target(self, params, z, r, s, t, lam, y):
    """sg((1 - lam) u(z_s, r, s) + lam u(z_t, s, t)) with z_s = z_t - (t - s) u(z_t, s, t): [B, ...]."""
    u2 = self.average_velocity(params, z, s, t, y)
    z_s = z - paths.expand_to(t - s, z) * u2
    u1 = self.average_velocity(params, z_s, r, s, y)
    lam = paths.expand_to(lam, z)
    return jax.lax.stop_gradient((1 - lam) * u1 + lam * u2)

  def loss(self, params, batch, key, ctx=StepContext()):
    frozen = ctx.frozen
    x, y = batch['x'], batch.get('y')
    n = x.shape[0]
    eps_key, time_key, label_key, net_key = jax.random.split(key, 4)
    eps = self.draw_noise(eps_key, x, y)
    r, s, t, lam = self.sample_times(time_key, n)
    z = self.path.noisy(x, eps, t)
    split = slice(0, self.num_split(n))
    edge = slice(self.num_split(n), n)
    take = rows  # Arrays and conditions alike.
    y_train = self.conditioning.drop(label_key, y, self.hparams.label_dropout)
    parts = []  # Static slices; either may be empty.
    if self.num_split(n):
      parts.append(self.split_target(params, z[split], r[split], s[split], t[split], lam[split],
                                     take(y_train, split)))
    if self.num_split(n) < n:
      parts.append(self.boundary_velocity(params, frozen, z[edge], t[edge],
                                          self.path.velocity(x, eps, t)[edge], take(y_train, edge)))
    target = jnp.concatenate(parts)
    u = self.average_velocity(params, z, r, t, y_train, net_key)
    error = per_sample_mean(jnp.square(u - target))
    loss = jnp.mean(error)
    metrics = {'loss': loss}
    if 0 < self.num_split(n) < n:
      metrics.update(split_loss=jnp.mean(error[split]), boundary_loss=jnp.mean(error[edge]))
    return loss, metrics

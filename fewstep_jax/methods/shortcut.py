"""Shortcut models (Frans et al. 2024, "One Step Diffusion via Shortcut Models").

The network s(z_t, t, d) predicts the step z_{t-d} = z_t - d s(z_t, t, d): the average velocity over [t - d, t],
so it is a flow map u(z_t, t - d, t) conditioned on (t, d) (flow_map.py). The reference runs time from
0 = noise to 1 = data; here t = 1 is noise (t_ours = 1 - t_ref) and steps go down in t.

With M = `base_steps` (128) the step sizes are D = 2^-k. A fixed share of every batch (1 - bootstrap_fraction,
7/8) trains flow matching at the finest level, d = 1/M standing in for d = 0, with t on the grid {1/M, ..., 1}:
loss || s(z_t, t, 1/M) - (eps - x) ||^2. The rest ("bootstrap") trains the step sizes D in {1, 1/2, ..., 2/M}
in equal shares, t on the grid of D ({D, 2D, ..., 1}), against two half steps d = D/2 of the EMA parameters:

  s1 = s_ema(z_t, t, d),  z' = clip(z_t - d s1, ±clip),  s2 = s_ema(z', t - d, d),
  loss || s(z_t, t, D) - sg(clip((s1 + s2) / 2, ±clip)) ||^2.

At the finest bootstrap level (d = 1/M, where s is the flow-matching velocity) the two half steps use CFG with
scale `bootstrap_guidance` for labelled samples; coarser levels inherit the guidance through the bootstrap, so
sampling costs one call a step. The paper's text reads the bootstrap levels as d in {1, ..., 1/64} with target step
2d; the reference trains D in {1, ..., 1/64} (D = 2/M) from half steps D/2, which is what is implemented here.
Labels are dropped with `label_dropout` for both parts (the dropped ones get no guidance).
Sampling: k uniform steps of size 1/k (k a power of two up to M matches the trained levels).
Official code: kvfrans/shortcut-models, targets_shortcut.py `get_targets`; an independent port of it agrees with
this loss to float32 rounding (same network, weights and draws).
"""
import math

import jax
import jax.numpy as jnp
import ml_collections

from fewstep_jax import conditions, paths
from fewstep_jax.distances import per_sample_mean
from fewstep_jax.methods.base import StepContext
from fewstep_jax.methods.flow_map import AverageVelocityMethod
from fewstep_jax.methods.registry import register


@register('shortcut')
class Shortcut(AverageVelocityMethod):
  target_network = 'ema_copy'  # The bootstrap targets' parameters: the EMA copy at method.target_ema.

  @classmethod
  def defaults(cls):
    return ml_collections.ConfigDict(dict(
        base_steps=128,             # M: the finest step is 1/M.
        bootstrap_fraction=0.125,   # Share of the batch trained by self-consistency (1/8 in the reference).
        target_ema=0.999,           # EMA rate of the bootstrap targets (must be in optim.ema_rates); 0 = live.
        clip=4.0,                   # Clip of the intermediate point and the bootstrap target.
        bootstrap_guidance=1.0,     # CFG scale inside the finest-level half steps (1.5 on ImageNet).
        label_dropout=0.1,
        coupling='independent',     # Minibatch noise-data coupling: 'independent' | 'exact' | 'greedy'.
    ))

  def __init__(self, config, **build):
    super().__init__(config, **build)
    hp = self.hparams
    self.num_levels = int(round(math.log2(hp.base_steps)))
    if 2 ** self.num_levels != hp.base_steps or self.num_levels < 1:
      raise ValueError(f'method.base_steps must be a power of two >= 2, got {hp.base_steps}')

  def step_velocity(self, params, z, t, d, y=None, key=None):
    """s(z_t, t, d) [B, ...]: the velocity of one step of size d [B] from t [B]."""
    return self.average_velocity(params, z, t - d, t, y, key)

  def num_bootstrap(self, batch: int) -> int:
    return round(batch * self.hparams.bootstrap_fraction)

  def bootstrap_target(self, target_params, z, t, half, y, finest_from: int = 0):
    """sg(clip((s1 + s2) / 2)) for the step 2 * half from t (all [B]). CFG applies to the labelled rows from
    the static index `finest_from` on: sample_times places the finest bootstrap level last, so the
    unconditional passes run on those rows only."""
    hp = self.hparams
    guided_rows = y is not None and hp.bootstrap_guidance != 1.0 and finest_from < z.shape[0]
    rows = slice(finest_from, None)

    def velocity(z, t):
      cond = self.step_velocity(target_params, z, t, half, y)
      if not guided_rows:
        return cond
      y_rows = conditions.rows(y, rows)
      labelled = paths.expand_to(self.conditioning.is_conditional(y_rows), z[rows])
      uncond = self.step_velocity(target_params, z[rows], t[rows], half[rows], self.conditioning.null(y_rows))
      mixed = jnp.where(labelled, uncond + hp.bootstrap_guidance * (cond[rows] - uncond), cond[rows])
      return jnp.concatenate([cond[:finest_from], mixed])

    s1 = velocity(z, t)
    z_mid = jnp.clip(z - paths.expand_to(half, z) * s1, -hp.clip, hp.clip)
    s2 = velocity(z_mid, t - half)
    return jax.lax.stop_gradient(jnp.clip((s1 + s2) / 2, -hp.clip, hp.clip))

  def finest_bootstrap_start(self, nb: int) -> int:
    """First of the nb bootstrap rows on the finest level (half step 1/M): the smallest i with
    i * levels // nb == levels - 1 (see sample_times)."""
    return -(-(self.num_levels - 1) * nb // self.num_levels)

  def sample_times(self, key, n):
    """(t, D) [n] each: the first num_bootstrap(n) samples on the bootstrap levels (equal shares, coarsest
    first), t on the grid of D; the rest flow matching at D = 1/M with t on {1/M, ..., 1}."""
    hp = self.hparams
    nb = self.num_bootstrap(n)
    level = jnp.where(jnp.arange(n) < nb, jnp.arange(n) * self.num_levels // max(nb, 1), self.num_levels)
    step_size = 2.0 ** -level.astype(jnp.float32)  # D = 1, 1/2, ..., 2/M for bootstrap; 1/M for flow matching.
    cells = jnp.round(1.0 / step_size).astype(jnp.int32)
    t = (jax.random.randint(key, (n,), 0, hp.base_steps) % cells + 1) * step_size
    return t, step_size

  def loss(self, params, batch, key, ctx=StepContext()):
    x, y = batch['x'], batch.get('y')
    n = x.shape[0]
    eps_key, time_key, label_key, net_key = jax.random.split(key, 4)
    eps = self.draw_noise(eps_key, x, y)
    t, step_size = self.sample_times(time_key, n)
    z = self.path.noisy(x, eps, t)
    y = self.conditioning.drop(label_key, y, self.hparams.label_dropout)
    nb = self.num_bootstrap(n)
    target_params = params if ctx.target is None else ctx.target
    take = lambda a, part: None if a is None else a[part]
    boot, flow = slice(0, nb), slice(nb, n)
    parts = []
    if nb:
      parts.append(self.bootstrap_target(target_params, z[boot], t[boot], step_size[boot] / 2, take(y, boot),
                                         self.finest_bootstrap_start(nb)))
    if nb < n:
      parts.append(self.path.velocity(x, eps, t)[flow])
    target = jnp.concatenate(parts)
    error = per_sample_mean(jnp.square(self.step_velocity(params, z, t, step_size, y, net_key) - target))
    loss = jnp.mean(error)
    metrics = {'loss': loss}
    if 0 < nb < n:
      metrics.update(bootstrap_loss=jnp.mean(error[boot]), flow_loss=jnp.mean(error[flow]))
    return loss, metrics

"""TwinFlow (Cheng et al. 2025, "Realizing One-step Generation on Large Models with Self-adversarial Flows"),
after the reference MNIST tutorial (tutorials/mnist/methodes.py) and production trainer
(src/methodes/twinflow/twinflow.py), translated to t = 0 data, t = 1 noise (the reference uses the same
direction, so no sign flips of time are needed beyond the fake branch's).

One flow-map network u(z_t, r, t) (flow_map.py, conditioned on (t, t - r)), no teacher, no critic. Called with
negated time it is the velocity of the *fake* flow, from noise to its own one-step samples:
v_fake(z, s) = net(z, -s, 0). With v = eps - x (enhanced by `cfg_ratio` (u(z_t,t,t|y) - u(z_t,t,t|∅)) of the
target-EMA parameters for labelled samples at 0 < t < 1) and t ~ U(0, 1), r ~ U(0, t):

- RCGM target (any-step consistency): t_m = max(t - delta, r), z' = z_t - delta v, then `rcgm_order` Euler steps
  of the target-EMA flow map from t_m to r (each conditioned on its own end time) displace z' by `pred`.
  R = ((t - r) u - pred - delta v) / delta if t - r >= delta, else u - v; target sg(u - clip(R, ±rcgm_clip)).
- One-step sample x_f = eps - u(eps, 0, 1), with gradient through u(eps, 0, 1) (the same eps as the data path).
- Rectification: fresh eps', s ~ U(0, 1), z'_s = (1 - s) sg(x_f) + s eps'; dv = v_fake(z'_s, s) - u(z'_s, s, s)
  (no gradient); loss || u(eps,0,1) - sg(u(eps,0,1) - dv) ||^2, whose gradient moves x_f by +dv, i.e. toward
  (x̂_real - x̂_fake) / s, the distribution-matching direction. It vanishes when fake and real flow agree.

Tutorial recipe (default; all five terms on the whole batch, weight 1 each, per-sample mean squared error):
  L1 ||u(z_t, r, t) - RCGM target||^2           any-step consistency
  L2 ||u(z_t, t, t) - v||^2                      real flow matching
  L3 ||v_fake(z^f_t, t) - (eps - sg x_f)||^2     fake flow, z^f_t = (1 - t) sg(x_f) + t eps
  L4 rectification (above)
  L5 ||u(eps, 0, 1) - RCGM target at (t = 1, r = 0)||^2
Production recipe (`production_split=True`): four equal slices of the batch, end-to-end (t = 1, r = 0),
near-diagonal (r in [near_diagonal t, t]), any-interval (r ~ U(0, t)) and adversarial (the path runs to
sg(x_f) of fresh noise and the network is called with fake time; target eps - x_f). Every row is one call of
the network; the non-adversarial rows regress on the RCGM target with per-sample weight
w = 1 + tan(0.4 pi (1 - (t - r))) (1 on adversarial rows), plus `rectify_weight` times the rectification term
on the end-to-end rows with dv clipped to ±rectify_clip. `robust_loss` replaces the squared error by Barron's
reweighting (alpha, c) = (1, 1e-3): mse sg((mse / c^2 / |alpha - 2| + 1)^((alpha - 2) / 2)) / c.
Both recipes feed the RCGM targets, L5's included, the CFG-enhanced v (tutorials/mnist/methodes.py,
`TwinFlow.training_step`; src/methodes/twinflow/twinflow.py, `training_step`). Dropout keys as the reference's RNG:
each trained call, and each of the rectification's two calls (run in training mode there), draws its own mask;
the target network's calls (CFG and RCGM) replay the first trained call's key, as the reference restores its RNG
state before each of them.
Deviations from the reference: its "unconditional" CFG branch is a shuffled label, ours is the null label with
label dropout; its MNIST network embeds raw times, ours uses the sinusoidal embedding (odd in t, so the sign of
the fake branch is visible to it).
Sampler: k uniform steps z_r = z_t - (t - r) u(z_t, r, t) (1 NFE: x = eps - u(eps, 0, 1)).
"""
import jax
import jax.numpy as jnp
import ml_collections

from fewstep_jax import paths
from fewstep_jax.conditions import rows
from fewstep_jax.distances import per_sample_mean
from fewstep_jax.methods.base import StepContext
from fewstep_jax.methods.flow_map import AverageVelocityMethod
from fewstep_jax.methods.registry import register


def barron(squared_error, alpha: float, c: float):
  """Barron's robust reweighting of a per-sample mean squared error [B] -> [B] (weight without gradient)."""
  weight = (squared_error / (c**2 + 1e-8) / abs(alpha - 2) + 1) ** ((alpha - 2) / 2)
  return squared_error * jax.lax.stop_gradient(weight) / c


@register('twinflow')
class TwinFlow(AverageVelocityMethod):
  target_network = 'ema_copy'  # The RCGM and CFG targets' parameters: the EMA copy at method.target_ema.

  @classmethod
  def defaults(cls):
    return ml_collections.ConfigDict(dict(
        rcgm_delta=0.01,          # First step of the RCGM target.
        rcgm_order=2,             # EMA Euler steps in the RCGM target.
        rcgm_clip=1.0,            # Clip of the RCGM residual R.
        target_ema=0.99,          # EMA rate of the target network (must be in optim.ema_rates); 0 = live.
        cfg_ratio=0.0,            # Enhanced target v + ratio (u_y - u_∅) (0.5 in the MNIST tutorial).
        label_dropout=0.1,
        coupling='independent',   # Minibatch noise-data coupling: 'independent' | 'exact' | 'greedy'.
        production_split=False,   # The production batch split (see the module docstring).
        near_diagonal=0.95,       # Production: r in [near_diagonal t, t] on the near-diagonal slice.
        rectify_weight=1.0,       # Weight of the rectification term (0.5 in the SD3.5 production config).
        rectify_clip=1.0,         # Production: clip of dv.
        robust_loss=False,        # Barron reweighting of every squared error.
        robust_alpha=1.0,
        robust_c=1e-3,
    ))

  def __init__(self, config, **build):
    super().__init__(config, **build)
    hp = self.hparams
    if hp.production_split and self.config.train.batch_size % (4 * self.config.train.micro_batches):
      raise ValueError('method.production_split splits each (micro-)batch in four: make train.batch_size / '
                       'train.micro_batches divisible by 4')

  def fake_velocity(self, params, z, s, y=None, key=None):
    """v_fake(z, s) [B, ...]: the network at negated time -s with r = t (interval 0)."""
    return self.apply(params, z, -s, jnp.zeros_like(s), y, key)

  def distance(self, prediction, target):
    """Per-sample mean squared error [B], or its Barron reweighting."""
    error = per_sample_mean(jnp.square(prediction - target))
    if self.hparams.robust_loss:
      return barron(error, self.hparams.robust_alpha, self.hparams.robust_c)
    return error

  def enhanced_velocity(self, target_params, z, t, v, y, key=None):
    """v + cfg_ratio (u(z,t,t|y) - u(z,t,t|∅)) for labelled samples with 0 < t < 1, without gradient; both calls
    with dropout key `key` (the reference replays one RNG state for its target passes)."""
    if y is None or not self.hparams.cfg_ratio:
      return v
    where = self.conditioning.is_conditional(y) & (t > 0) & (t < 1)
    return self.folded_guidance(target_params, z, t, v, y, 1.0, self.hparams.cfg_ratio, where, key)

  def rcgm_target(self, target_params, u, z, r, t, v, y, key=None):
    """sg(u - clip(R)) [B, ...] for the prediction u = u(z_t, r, t); see the module docstring. Every Euler step of
    the target network uses dropout key `key`."""
    hp = self.hparams
    delta = hp.rcgm_delta
    t_m = jnp.maximum(t - delta, r)
    z_m = z - delta * v
    z_k = z_m
    for k in range(hp.rcgm_order):
      s_from = t_m + (r - t_m) * (k / hp.rcgm_order)
      s_to = t_m + (r - t_m) * ((k + 1) / hp.rcgm_order)
      z_k = z_k - paths.expand_to(s_from - s_to, z) * self.average_velocity(target_params, z_k, s_to, s_from, y,
                                                                             key)
    displacement = z_m - z_k
    gap = paths.expand_to(t - r, z)
    residual = jnp.where(gap >= delta, (gap * u - displacement - delta * v) / delta, u - v)
    return jax.lax.stop_gradient(u - jnp.clip(residual, -hp.rcgm_clip, hp.rcgm_clip))

  def rectification_direction(self, params, x_fake, key, y, dropout=False):
    """dv [B, ...] = v_fake(z'_s, s) - u(z'_s, s, s) on fresh paths toward sg(x_fake), without gradient. With
    `dropout`, each of the two calls draws its own dropout mask (the reference runs them in training mode)."""
    noise_key, time_key, fake_key, real_key = jax.random.split(key, 4)
    fake_key, real_key = (fake_key, real_key) if dropout else (None, None)
    s = jax.random.uniform(time_key, (x_fake.shape[0],))
    z_s = self.path.noisy(jax.lax.stop_gradient(x_fake), jax.random.normal(noise_key, x_fake.shape), s)
    return jax.lax.stop_gradient(self.fake_velocity(params, z_s, s, y, fake_key) -
                                 self.average_velocity(params, z_s, s, s, y, real_key))

  def loss(self, params, batch, key, ctx=StepContext()):
    x, y = batch['x'], batch.get('y')
    eps_key, time_key, label_key, net_key, fake_key, rectify_key = jax.random.split(key, 6)
    eps = self.draw_noise(eps_key, x, y)
    y = self.conditioning.drop(label_key, y, self.hparams.label_dropout)
    target_params = params if ctx.target is None else ctx.target
    if self.hparams.production_split:
      return self.production_loss(params, target_params, x, eps, y, time_key, net_key, fake_key, rectify_key)
    return self.tutorial_loss(params, target_params, x, eps, y, time_key, net_key, rectify_key)

  def tutorial_loss(self, params, target_params, x, eps, y, time_key, net_key, rectify_key):
    n = x.shape[0]
    t_key, r_key = jax.random.split(time_key)
    # Each trained call draws its own dropout mask; the target network's calls replay the first call's key.
    any_key, real_key, one_key, fake_key = jax.random.split(net_key, 4)
    t = jax.random.uniform(t_key, (n,))
    r = t - jax.random.uniform(r_key, (n,)) * t
    z = self.path.noisy(x, eps, t)
    v = self.enhanced_velocity(target_params, z, t, self.path.velocity(x, eps, t), y, any_key)
    u = self.average_velocity(params, z, r, t, y, any_key)
    any_step = self.distance(u, self.rcgm_target(target_params, u, z, r, t, v, y, any_key))
    real = self.distance(self.average_velocity(params, z, t, t, y, real_key), v)
    ones, zeros = jnp.ones((n,)), jnp.zeros((n,))
    u_one = self.average_velocity(params, eps, zeros, ones, y, one_key)
    x_fake = eps - u_one
    z_fake = self.path.noisy(jax.lax.stop_gradient(x_fake), eps, t)
    fake = self.distance(self.fake_velocity(params, z_fake, t, y, fake_key),
                         eps - jax.lax.stop_gradient(x_fake))
    dv = self.rectification_direction(params, x_fake, rectify_key, y, dropout=True)
    rectify = self.distance(u_one, jax.lax.stop_gradient(u_one - dv))
    # The reference's last term passes its (CFG-enhanced) target v, not the plain eps - x.
    one_step = self.distance(u_one, self.rcgm_target(target_params, u_one, eps, zeros, ones, v, y, any_key))
    terms = {'any_step': any_step, 'real': real, 'fake': fake, 'rectify': rectify, 'one_step': one_step}
    terms = {name: jnp.mean(value) for name, value in terms.items()}
    terms['rectify'] = self.hparams.rectify_weight * terms['rectify']
    loss = sum(terms.values())
    return loss, dict(terms, loss=loss, dv_norm=jnp.sqrt(jnp.mean(jnp.square(dv))))

  def production_times(self, key, n):
    """(r, t, slice) [n] each for the production split: slice 0 end-to-end (t = 1, r = 0), 1 near-diagonal
    (r in [near_diagonal t, t]), 2 any-interval (r ~ U(0, t)), 3 adversarial; t ~ U(0, 1) elsewhere."""
    slice_of = jnp.arange(n) // (n // 4)
    t_key, r_key = jax.random.split(key)
    t = jax.random.uniform(t_key, (n,))
    fraction = jax.random.uniform(r_key, (n,))
    near = t - fraction * (1 - self.hparams.near_diagonal) * t
    r = jnp.select([slice_of == 0, slice_of == 1], [jnp.zeros((n,)), near], t - fraction * t)
    return r, jnp.where(slice_of == 0, 1.0, t), slice_of

  def production_loss(self, params, target_params, x, eps, y, time_key, net_key, fake_key, rectify_key):
    hp = self.hparams
    n = x.shape[0]
    quarter = n // 4
    r, t, slice_of = self.production_times(time_key, n)
    adversarial = slice_of == 3
    # Adversarial rows (the last quarter): the path runs to a one-step sample of fresh noise (no gradient).
    real, last = slice(0, 3 * quarter), slice(3 * quarter, n)
    fresh_key, generate_key = jax.random.split(fake_key)
    fresh = jax.random.normal(fresh_key, x[last].shape, x.dtype)
    ones = jnp.ones((n - 3 * quarter,))
    x_fake = fresh - self.average_velocity(params, fresh, 0 * ones, ones, rows(y, last),
                                           generate_key)
    x_path = jnp.concatenate([x[real], jax.lax.stop_gradient(x_fake)])
    z = self.path.noisy(x_path, eps, t)
    v = self.path.velocity(x_path, eps, t)
    # One call for every row: real flow map at (t, t - r), or the fake flow at (-t, 0).
    prediction = self.apply(params, z, jnp.where(adversarial, -t, t), jnp.where(adversarial, 0.0, t - r), y,
                            net_key)
    # Targets: RCGM (with the enhanced velocity, which the reference also feeds its RCGM target) on the real rows
    # only; eps - x_fake on the adversarial ones. The target network's calls replay the prediction's dropout key.
    y_real = rows(y, real)
    v_real = self.enhanced_velocity(target_params, z[real], t[real], v[real], y_real, net_key)
    target = jnp.concatenate([
        self.rcgm_target(target_params, prediction[real], z[real], r[real], t[real], v_real, y_real, net_key),
        v[last]])
    weight = jnp.where(adversarial, 1.0, 1.0 + jnp.tan(0.4 * jnp.pi * (1.0 - (t - r))))
    main = jnp.mean(weight * self.distance(prediction, target))
    end_to_end = slice(0, quarter)
    u_one = prediction[end_to_end]
    dv = self.rectification_direction(params, eps[end_to_end] - u_one, rectify_key,
                                      rows(y, end_to_end), dropout=True)
    dv = jnp.clip(dv, -hp.rectify_clip, hp.rectify_clip)
    rectify = hp.rectify_weight * jnp.mean(self.distance(u_one, jax.lax.stop_gradient(u_one - dv)))
    loss = main + rectify
    return loss, {'loss': loss, 'main': main, 'rectify': rectify, 'dv_norm': jnp.sqrt(jnp.mean(jnp.square(dv)))}

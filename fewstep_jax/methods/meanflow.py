"""MeanFlow (Geng et al. 2025, "Mean Flows for One-step Generative Modeling").

The network predicts the average velocity u(z_t, r, t) = 1/(t - r) ∫_r^t v(z_s, s) ds over [r, t] (r <= t),
so one step z_r = z_t - (t - r) u(z_t, r, t) jumps from t to r. The MeanFlow identity (Eq. 6)

  u(z_t, r, t) = v(z_t, t) - (t - r) d/dt u(z_t, r, t),   d/dt u = v ∂_z u + ∂_t u,

gives the regression target u_tgt = sg(v - (t - r) dudt), with (u, dudt) from ONE jax.jvp of the network along
the tangent (v, 0, 1) in (z, r, t) (Eq. 8); the primal output is the prediction the loss differentiates.

- Times: t, r logit-normal(time_mean, time_std), sorted so t >= r; a fixed fraction `ratio_r_equal_t` of the
  batch gets r = t, where the identity reduces to flow matching (u = v). That fraction is a fixed slice of the
  batch, so with `jvp_sub_batch` the JVP runs on the r != t part only and a plain forward pass on the rest:
  the same loss and gradients (the tangent term is multiplied by t - r = 0) at a fraction of the cost; the two
  parts draw their dropout masks from two keys (fold_in(key, 0) and fold_in(key, 1)), so every row has its own. The
  batch order is random, so a positional slice is a random subset; it is independent of the label-dropout
  mask (the reference draws both from the front of the batch).
- Loss: per sample L = ||u - u_tgt||^2 (summed over data dimensions, as the reference), adaptively weighted
  by 1 / sg(L + c)^p (p = 1, c = 0.01); `mse` logs the unweighted mean of L.
- CFG folded into training (Eq. 13-19 of the paper's guidance section): for labelled samples with t in
  [guidance_t_start, guidance_t_end], v is replaced in the tangent and the target by
  v_g = omega v + (1 - omega - kappa) u(z_t, t, t | ∅) + kappa u(z_t, t, t | y), the two u terms without
  gradient and without dropout. omega = 1, kappa = 0 switches it off (no extra passes). 10% label dropout. The
  defaults omega = 1, kappa = 0.5 on [0, 1] are the official configs/default.py (DiT-B/4); the paper-row configs
  set their table's values (configs/imagenet256_latent/meanflow.py: XL/2's omega 0.2, kappa 0.92 on [0, 0.75]).
  On the r = t rows the conditional term u(z_t, t, t | y) is the prediction the loss already makes there (same
  input and label), so with `jvp_sub_batch` and a network without training noise (no dropout: nn.draws_in_training)
  that prediction, under stop_gradient, is reused instead of a second pass: the same loss and gradients with one
  pass fewer on 75% of the batch. With dropout the prediction is noisy and the term is not, so the pass stays.
- Network conditioning (t, t - r) and the k-step sampler: flow_map.AverageVelocityMethod.
Official code: Gsunshine/meanflow, meanflow.py (`MeanFlow.forward`, `sample_tr`, `guidance_fn`); an
independent port of it on the same network, weights and draws agrees with this loss to float32 rounding.
Deviation: the label-dropout and r = t masks are drawn independently (the official takes both from the front of
the batch).
"""
import jax
import jax.numpy as jnp
import ml_collections

from fewstep_jax import nn, paths, timesteps
from fewstep_jax.conditions import rows
from fewstep_jax.methods.base import StepContext
from fewstep_jax.methods.flow_map import AverageVelocityMethod
from fewstep_jax.methods.registry import register
from fewstep_jax.nn.attention import require_forward_mode


@register('meanflow')
class MeanFlow(AverageVelocityMethod):

  @classmethod
  def defaults(cls):
    return ml_collections.ConfigDict(dict(
        time_mean=-0.4,
        time_std=1.0,
        ratio_r_equal_t=0.75,   # Fraction of the batch with r = t (flow-matching samples).
        adaptive_p=1.0,         # Adaptive loss weight 1 / sg(L + c)^p; p = 0 is the plain squared error.
        adaptive_c=0.01,
        label_dropout=0.1,
        coupling='independent',       # Minibatch noise-data coupling: 'independent' | 'exact' | 'greedy'.
        omega=1.0,              # Folded CFG scale on the conditional velocity (the official default config's).
        kappa=0.5,              # Folded CFG weight on the model's own conditional prediction (same).
        guidance_t_start=0.0,   # Folded CFG applies for t in [start, end].
        guidance_t_end=1.0,
        jvp_sub_batch=True,     # JVP on the r != t part of the batch only (same loss and gradients).
    ))

  def __init__(self, config, **build):
    super().__init__(config, **build)
    if 'attention' in config.network:
      require_forward_mode(config.network.attention)

  def num_jvp(self, batch: int) -> int:
    """How many samples (the first ones of the batch) have r != t: a static size."""
    return batch - round(batch * self.hparams.ratio_r_equal_t)

  def guided_rows(self, t, y, y_train):
    """[B] mask of the samples whose velocity folded CFG replaces (labelled after dropout, t inside the guidance
    interval), or None when guidance is off (unconditional, or omega = 1 and kappa = 0)."""
    hp = self.hparams
    if y is None or (hp.omega == 1.0 and hp.kappa == 0.0):
      return None
    return self.conditioning.is_conditional(y_train) & (t >= hp.guidance_t_start) & (t <= hp.guidance_t_end)

  def shares_conditional_pass(self, batch: int) -> bool:
    """Whether the r = t rows' folded-CFG conditional term is taken from their prediction (module docstring)."""
    return (self.hparams.jvp_sub_batch and self.hparams.kappa != 0.0 and self.num_jvp(batch) < batch
            and not nn.draws_in_training(self.student.module))

  def prediction_and_target(self, params, z, r, t, v, y, key, tail_velocity=None):
    """(u [B, ...] with gradient, u_tgt [B, ...] without) for the tangent v; see the module docstring.

    tail_velocity: with the sub-batch JVP, u_tail -> the velocity target of the r = t rows given their prediction
    (folded CFG reusing it); None: v there."""
    def u_of(z, r, t, y, key=key):
      return self.average_velocity(params, z, r, t, y, key)

    def with_tangent(z, r, t, v, y, key=key):
      return jax.jvp(lambda z, r, t: u_of(z, r, t, y, key), (z, r, t), (v, jnp.zeros_like(r), jnp.ones_like(t)))

    batch = z.shape[0]
    num_jvp = self.num_jvp(batch)
    finish = ((lambda u_tail, v_tail: v_tail) if tail_velocity is None
              else (lambda u_tail, v_tail: tail_velocity(u_tail)))
    if self.hparams.jvp_sub_batch and num_jvp == 0:  # Every r = t: flow matching, no tangent needed.
      u = u_of(z, r, t, y)
      return u, jax.lax.stop_gradient(finish(u, v))
    if self.hparams.jvp_sub_batch and num_jvp < batch:
      head = slice(0, num_jvp)
      take = rows  # Arrays and conditions alike.
      # Each half draws its own dropout masks: one key for both would give tail row j head row j's mask.
      head_key, tail_key = (None, None) if key is None else (jax.random.fold_in(key, 0), jax.random.fold_in(key, 1))
      u_head, dudt_head = with_tangent(z[head], r[head], t[head], v[head], take(y, head), head_key)
      tail = slice(num_jvp, batch)
      u_tail = u_of(z[tail], r[tail], t[tail], take(y, tail), tail_key)
      target_head = v[head] - paths.expand_to(t[head] - r[head], u_head) * dudt_head
      # The tail's tangent term is multiplied by t - r = 0: its target is its velocity.
      target = jnp.concatenate([target_head, finish(u_tail, v[tail])])
      return jnp.concatenate([u_head, u_tail]), jax.lax.stop_gradient(target)
    u, dudt = with_tangent(z, r, t, v, y)
    return u, jax.lax.stop_gradient(v - paths.expand_to(t - r, v) * dudt)

  def sample_times(self, key, n):
    """(r, t) [n] each: sorted logit-normal pairs, the last round(n ratio) with r = t."""
    r, t = timesteps.sample_ordered_pair(key, n, self.hparams.time_mean, self.hparams.time_std)
    return jnp.where(jnp.arange(n) < self.num_jvp(n), r, t), t

  def loss(self, params, batch, key, ctx=StepContext()):
    del ctx
    x, y = batch['x'], batch.get('y')
    hp = self.hparams
    eps_key, time_key, label_key, net_key = jax.random.split(key, 4)
    eps = self.draw_noise(eps_key, x, y)
    r, t = self.sample_times(time_key, x.shape[0])
    z = self.path.noisy(x, eps, t)
    v = self.path.velocity(x, eps, t)
    y_train = self.conditioning.drop(label_key, y, hp.label_dropout)
    where = self.guided_rows(t, y, y_train)
    tail_velocity = None
    if where is not None and self.shares_conditional_pass(x.shape[0]):
      # The r != t rows are guided now (v_g is their JVP's tangent); the r = t rows once their prediction exists.
      head, tail = slice(0, self.num_jvp(x.shape[0])), slice(self.num_jvp(x.shape[0]), None)
      guide = lambda part, u_cond=None: self.folded_guidance(
          params, z[part], t[part], v[part], rows(y, part), hp.omega, hp.kappa, where[part], u_cond=u_cond)
      tail_velocity = lambda u_tail: guide(tail, u_tail)
      v = jnp.concatenate([guide(head), v[tail]]) if self.num_jvp(x.shape[0]) else v
    elif where is not None:
      v = self.folded_guidance(params, z, t, v, y, hp.omega, hp.kappa, where)
    u, target = self.prediction_and_target(params, z, r, t, v, y_train, net_key, tail_velocity)
    squared_error = jnp.sum(jnp.square(u - target).reshape(x.shape[0], -1), axis=1)
    weight = jax.lax.stop_gradient(1.0 / (squared_error + hp.adaptive_c) ** hp.adaptive_p)
    loss = jnp.mean(weight * squared_error)
    return loss, {'loss': loss, 'mse': jnp.mean(squared_error)}

"""Consistency flow matching (Yang et al. 2024, "Consistency Flow Matching: Defining Straight Flows with
Velocity Consistency").

A velocity network v(z_t, t) on the linear path, trained so that the flow is straight inside each of K segments
0 = s_0 < s_1 < ... < s_K = 1. For t in (s_k, s_{k+1}] the segment's data-side end is s_k (the reference runs
time the other way: there it is the segment's upper end) and

  f(z_t, t) = z_t - (t - s_k) v(z_t, t)

predicts the point at s_k. With t' = t - dt on the same straight path (same x and eps) and the target from the
same network without gradient and with the same dropout key:

  loss = 0.5 (|| f(z_t, t) - sg f(z_t', t') ||^2 + alpha || v(z_t, t) - sg v(z_t', t') ||^2)   (summed over dims)

When t' falls at or below s_k, the target end point is the path's own point z_{s_k} = (1 - s_k) x + s_k eps (at
s_0 = 0 that is the data), which anchors every segment; the velocity term is dropped when t - s_k < 1.01 dt.
dt = 1e-3, alpha = 1e-5 (reference). t ~ U(0, 1] as in the reference; label dropout for CFG.

Sampling: `nfe` Euler steps on the uniform grid (with K segments and nfe = K, one straight step per segment;
fewer steps than segments cross segment ends, where the flow is only straight piecewise). With guidance != 1
each step costs two calls.
Official code: YangLing0818/consistency_flow_matching, losses.py `get_consistency_flow_matching_loss_fn`. Not
reproduced: its CIFAR-10 two-stage boundary schedule (boundary 0 for 100k steps, then 0.9).
"""
import jax
import jax.numpy as jnp
import ml_collections

from fewstep_jax import paths, sampling, timesteps
from fewstep_jax.methods.base import SingleNetworkMethod, StepContext
from fewstep_jax.methods.registry import register


@register('consistency_fm')
class ConsistencyFM(SingleNetworkMethod):
  teaches = True
  uses_coupling = True

  @classmethod
  def readout_of(cls, config):
    return paths.readout('flow')

  @classmethod
  def defaults(cls):
    return ml_collections.ConfigDict(dict(
        num_segments=2,           # K.
        dt=1e-3,                  # Gap between the two points on the path.
        alpha=1e-5,               # Weight of the velocity-consistency term.
        label_dropout=0.1,
        coupling='independent',   # Minibatch noise-data coupling: 'independent' | 'exact' | 'greedy'.
        guidance=1.0,             # Sampling CFG scale (2 calls a step when != 1).
    ))

  def __init__(self, config, **build):
    super().__init__(config, **build)
    if self.hparams.num_segments < 1:
      raise ValueError(f'method.num_segments must be >= 1, got {self.hparams.num_segments}')
    self.path = paths.LinearFlowPath()
    self.velocity = self.readout.model(self.apply)

  def segment_start(self, t):
    """s_k [B], the data-side end of the segment (s_k, s_{k+1}] holding t [B] (t in (0, 1])."""
    k = self.hparams.num_segments
    return jnp.clip(jnp.ceil(t * k) - 1, 0, k - 1) / k

  def targets(self, params, x, eps, t, y, key):
    """(f, v) at t with gradient and their targets at t - dt without, plus the velocity mask: [B, ...] x4, [B]."""
    hp = self.hparams
    start = self.segment_start(t)
    t_next = jnp.maximum(t - hp.dt, 0.0)
    z, z_next = self.path.noisy(x, eps, t), self.path.noisy(x, eps, t_next)
    v = self.velocity(params, z, t, y=y, key=key)
    v_next = jax.lax.stop_gradient(self.velocity(params, z_next, t_next, y=y, key=key))
    f = z - paths.expand_to(t - start, z) * v
    f_next = z_next - paths.expand_to(t_next - start, z) * v_next
    crossed = paths.expand_to(t_next <= start, z)
    f_target = jnp.where(crossed, self.path.noisy(x, eps, start), f_next)
    keep_velocity = (t - start) >= 1.01 * hp.dt
    return f, f_target, v, v_next, keep_velocity

  def loss(self, params, batch, key, ctx=StepContext()):
    del ctx
    x, y = batch['x'], batch.get('y')
    n = x.shape[0]
    eps_key, time_key, label_key, net_key = jax.random.split(key, 4)
    eps = self.draw_noise(eps_key, x, y)
    t = 1.0 - timesteps.sample_uniform(time_key, n)  # (0, 1].
    y = self.conditioning.drop(label_key, y, self.hparams.label_dropout)
    f, f_target, v, v_target, keep_velocity = self.targets(params, x, eps, t, y, net_key)
    sum_dims = lambda a: jnp.sum(a.reshape(n, -1), axis=1)
    f_loss = sum_dims(jnp.square(f - f_target))
    v_loss = jnp.where(keep_velocity, sum_dims(jnp.square(v - v_target)), 0.0)
    loss = 0.5 * jnp.mean(f_loss + self.hparams.alpha * v_loss)
    return loss, {'loss': loss, 'f_loss': jnp.mean(f_loss), 'v_loss': jnp.mean(v_loss)}

  def sampling_plan(self, nfe, conditional: bool, guidance=None, solver=None, grid=None):
    """The SamplingPlan of `sample` with `nfe` network calls: Euler steps from t = 1 (two calls a step under
    CFG)."""
    self.check_no_ode_options(solver, grid)
    guidance = self.hparams.guidance if guidance is None else guidance
    steps = sampling.solver_plan(timesteps.flow_time_grid, 'euler', sampling.drift_evaluations(
        nfe, True if conditional else None, guidance))
    return sampling.SamplingPlan(steps, guidance=guidance)

  def sample(self, params, key, n, plan, labels=None, noise=None):
    """Samples [n, *data_shape]: Euler steps from t = 1 to 0 along `plan` (from `noise` if given)."""
    z = jax.random.normal(key, (n,) + self.data_shape) if noise is None else noise
    velocity = self.conditioning.guided(lambda z_t, t, y: self.velocity(params, z_t, t, y=y), labels, plan.guidance)
    return sampling.solve_plan(velocity, z, plan.steps, 'euler')

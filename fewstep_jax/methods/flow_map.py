"""Shared by the methods whose network is a flow map on the linear path: the average velocity

  u(z_t, r, t) = 1/(t - r) ∫_r^t v(z_s, s) ds   (r <= t),   one step z_r = z_t - (t - r) u(z_t, r, t),

with u(z_t, t, t) = v(z_t, t). The network sees (t, t - r) (MeanFlow's reference conditioning) and so needs two
time inputs; as a teacher it is read as the velocity u(z, t, t) (readout 'flow_map'). Also here: classifier-free
guidance folded into a training target (MeanFlow, SplitMeanFlow and TwinFlow each use it). Sampling: k uniform
steps from t = 1 to 0, one network call each (guidance, where a method has it, is trained into the weights).
"""
import jax
import jax.numpy as jnp

from fewstep_jax import paths, sampling, timesteps
from fewstep_jax.methods.base import SingleNetworkMethod


class AverageVelocityMethod(SingleNetworkMethod):
  teaches = True
  uses_coupling = True

  @classmethod
  def readout_of(cls, config):
    return paths.readout('flow_map')

  def __init__(self, config, **build):
    super().__init__(config, **build)
    if not config.network.two_times:
      raise ValueError(f'{self.name} needs a network with two time inputs: set --config.network.two_times=True')
    self.path = paths.LinearFlowPath()

  def average_velocity(self, params, z, r, t, y=None, key=None):
    """u(z_t, r, t): z [B, ...], r and t [B]; the network sees (t, t - r)."""
    return self.apply(params, z, t, t - r, y, key)

  def folded_guidance(self, params, z, t, v, y, omega: float, kappa: float, where, key=None, u_cond=None):
    """Classifier-free guidance folded into a velocity target: where `where` [B] holds,
      v_g = omega v + (1 - omega - kappa) u(z_t, t, t | ∅) + kappa u(z_t, t, t | y),
    else v. The u terms come from `params` without gradient (dropout key `key`), each computed only if its weight
    is non-zero; `u_cond`, if given, is u(z_t, t, t | y) already computed. MeanFlow's (omega, kappa);
    SplitMeanFlow's (w, 0); TwinFlow's v + r (u_y - u_∅) is (1, r)."""
    uncond_weight = 1 - omega - kappa
    u_uncond = (self.average_velocity(params, z, t, t, self.conditioning.null(y), key)
                if uncond_weight else 0.0)
    if u_cond is None:
      u_cond = self.average_velocity(params, z, t, t, y, key) if kappa else 0.0
    v_guided = jax.lax.stop_gradient(omega * v + uncond_weight * u_uncond + kappa * u_cond)
    return jnp.where(paths.expand_to(where, v), v_guided, v)

  def sampling_plan(self, nfe, conditional: bool, guidance=None, solver=None, grid=None):
    """The SamplingPlan of `sample` with `nfe` network calls: nfe uniform steps from t = 1 to 0."""
    del conditional
    self.check_no_ode_options(solver, grid)
    if guidance not in (None, 1.0):
      raise ValueError(f'{self.name} trains its guidance into the weights (one call a step): it samples with no CFG '
                       f'scale, got {guidance}')
    return sampling.SamplingPlan(sampling.solver_plan(timesteps.flow_time_grid, 'euler', nfe))

  def sample(self, params, key, n, plan, labels=None, noise=None):
    """Samples [n, *data_shape] along `plan`: uniform steps z_r = z_t - (t - r) u(z_t, r, t) from t = 1."""
    z = jax.random.normal(key, (n,) + self.data_shape) if noise is None else noise
    grid = jnp.asarray(plan.steps.grid)

    def step(i, z):
      t, r = grid[i], grid[i + 1]
      t_vec, r_vec = jnp.full((n,), t), jnp.full((n,), r)
      return z - (t - r) * self.average_velocity(params, z, r_vec, t_vec, labels)
    return jax.lax.fori_loop(0, plan.steps.num_steps, step, z)

"""Flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023).

  z_t = (1 - t) x + t eps,   loss = || v_theta(z_t, t, y) - (eps - x) ||^2   (mean over data dimensions)

Labels are replaced by the null label ∅ with probability `label_dropout`, which trains the unconditional branch
used by classifier-free guidance: v = v_∅ + w (v_y - v_∅). Sampling integrates dz/dt = v from t = 1 to t = 0
with Euler or Heun (the first step from t = 1 and the step onto t = 0 are Euler steps: sampling.heun_plan). NFE
counts network calls: with guidance (w != 1) each drift evaluation costs two.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fewstep_jax import paths, sampling, timesteps
from fewstep_jax.distances import per_sample_mean
from fewstep_jax.methods.base import SingleNetworkMethod, StepContext, check_choice
from fewstep_jax.methods.registry import register

# Flow-time samplers by config name, each reading its own hyperparameters.
FLOW_TIME_SAMPLERS = {
    'uniform': lambda key, n, hp: timesteps.sample_uniform(key, n),
    'logit_normal': lambda key, n, hp: timesteps.sample_logit_normal(key, n, hp.time_mean, hp.time_std),
}


@register('flow_matching')
class FlowMatching(SingleNetworkMethod):
  teaches = True
  uses_coupling = True
  time_samplers = FLOW_TIME_SAMPLERS

  @classmethod
  def readout_of(cls, config):
    return paths.readout('flow')

  @classmethod
  def defaults(cls):
    return ml_collections.ConfigDict(dict(
        time_sampler='logit_normal',  # 'uniform' | 'logit_normal' (t = sigmoid(n), n ~ N(mean, std^2)).
        time_mean=0.0,
        time_std=1.0,
        label_dropout=0.1,            # Probability of training on the null label (CFG).
        coupling='independent',       # Minibatch noise-data coupling: 'independent' | 'exact' | 'greedy'.
        guidance=1.0,                 # Sampling CFG scale w; 1 disables guidance (one call per NFE).
        solver='heun',                # 'euler' | 'heun'.
    ))

  def __init__(self, config, **build):
    super().__init__(config, **build)
    check_choice(self.hparams, 'time_sampler', self.time_samplers)
    self.path = paths.LinearFlowPath()
    self.velocity = self.readout.model(self.apply)

  def loss(self, params, batch, key, ctx=StepContext()):
    del ctx
    x, y = batch['x'], batch.get('y')
    eps_key, time_key, label_key, net_key = jax.random.split(key, 4)
    eps = self.draw_noise(eps_key, x, y)
    t = self.time_samplers[self.hparams.time_sampler](time_key, x.shape[0], self.hparams)
    z_t = self.path.noisy(x, eps, t)
    y = self.conditioning.drop(label_key, y, self.hparams.label_dropout)
    v_pred = self.velocity(params, z_t, t, y=y, key=net_key)
    loss = jnp.mean(per_sample_mean(jnp.square(v_pred - self.path.velocity(x, eps, t))))
    return loss, {'loss': loss}

  ode_solvers = sampling.SOLVERS

  def grid_points(self, num_steps: int) -> int:
    """The points of a num_steps-step grid on the time map: all of them, from t = 1 to 0."""
    return num_steps + 1

  def grid_from_fractions(self, fractions):
    """A stored grid (sampler_grids.py): the times 1 - fractions [K + 1], from 1 to 0; equal fractions are the
    uniform grid."""
    return 1.0 - np.asarray(fractions)

  def sampling_plan(self, nfe, conditional: bool, guidance=None, solver=None, grid=None):
    """The SamplingPlan of `sample` with `nfe` network calls: the uniform grid, or `grid` (a stored one: the
    solver's descending times from 1 to 0)."""
    guidance = self.hparams.guidance if guidance is None else guidance
    solver = solver or self.hparams.solver
    make_grid = timesteps.flow_time_grid if grid is None else sampling.fixed_grid(grid)
    steps = sampling.solver_plan(make_grid, solver,
                                 sampling.drift_evaluations(nfe, True if conditional else None, guidance),
                                 noise_level=self.path.sigma)
    return sampling.SamplingPlan(steps, guidance=guidance, solver=solver)

  def sample(self, params, key, n, plan, labels=None, noise=None):
    """Samples [n, *data_shape] by solving the flow ODE from t = 1 to t = 0 along `plan`, from `noise` [n, ...]
    ~ N(0, I) if given (reflow pairs), else from noise drawn with key."""
    z = jax.random.normal(key, (n,) + self.data_shape) if noise is None else noise
    velocity = self.conditioning.guided(lambda z_t, t, y: self.velocity(params, z_t, t, y=y), labels, plan.guidance)
    return sampling.solve_plan(velocity, z, plan.steps, plan.solver)

"""EDM denoiser training (Karras et al. 2022).

  D(x; sigma) = c_skip x + c_out F(c_in x, c_noise),   ln sigma ~ N(P_mean, P_std^2),
  loss = lambda(sigma) || D(x + sigma eps; sigma) - x ||^2,   lambda = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2

Sampling: Heun on the Karras grid (descending, sigma_max -> sigma_min, then 0) of dx/dsigma = (x - D) / sigma; 18 grid
steps cost 35 NFE, EDM's sampler. At other budgets `sampling.heun_plan` decides the steps: at few NFE more Euler steps
instead of corrections across long drops in sigma (sampling.py). Label dropout and CFG as in flow matching (a guided
denoiser D_∅ + w (D_y - D_∅)).
Official code: NVlabs/edm, training/loss.py `EDMLoss` and training/networks.py `EDMPrecond`. Deviations: label
dropout (EDM trains no null label; its paper-row configs set 0), no augmentation pipeline.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fewstep_jax import paths, sampling, timesteps
from fewstep_jax.distances import edm_weight, per_sample_mean
from fewstep_jax.methods.base import EDM_SIGMA_DEFAULTS, SingleNetworkMethod, StepContext
from fewstep_jax.methods.registry import register


@register('edm')
class EDM(SingleNetworkMethod):
  teaches = True
  uses_coupling = True

  @classmethod
  def readout_of(cls, config):
    return paths.readout('edm', config.method.sigma_data)

  @classmethod
  def defaults(cls):
    return ml_collections.ConfigDict(dict(
        p_mean=-1.2,
        p_std=1.2,
        **EDM_SIGMA_DEFAULTS,
        label_dropout=0.1,
        coupling='independent',       # Minibatch noise-data coupling: 'independent' | 'exact' | 'greedy'.
        guidance=1.0,
        solver='heun',
    ))

  def __init__(self, config, **build):
    super().__init__(config, **build)
    self.denoise = self.readout.model(self.apply)

  def loss(self, params, batch, key, ctx=StepContext()):
    del ctx
    x, y = batch['x'], batch.get('y')
    hp = self.hparams
    eps_key, sigma_key, label_key, net_key = jax.random.split(key, 4)
    eps = self.draw_noise(eps_key, x, y)
    sigma = timesteps.sample_log_normal(sigma_key, x.shape[0], hp.p_mean, hp.p_std)
    x_noisy = paths.EDMPath().noisy(x, eps, sigma)
    y = self.conditioning.drop(label_key, y, hp.label_dropout)
    denoised = self.denoise(params, x_noisy, sigma, y=y, key=net_key)
    loss = jnp.mean(edm_weight(sigma, hp.sigma_data) * per_sample_mean(jnp.square(denoised - x)))
    return loss, {'loss': loss}

  ode_solvers = sampling.SOLVERS

  def sampling_grid(self, num_steps):
    """Descending Karras sigmas (num_steps of them) followed by 0: num_steps solver steps."""
    hp = self.hparams
    sigmas = timesteps.karras_sigmas(num_steps, hp.sigma_min, hp.sigma_max, hp.rho)
    return jnp.concatenate([sigmas, jnp.zeros((1,), sigmas.dtype)])

  def grid_points(self, num_steps: int) -> int:
    """The points of a num_steps-step grid on the Karras map (all but the final 0)."""
    return num_steps

  def grid_from_fractions(self, fractions):
    """A stored grid (sampler_grids.py): the Karras map at increasing fractions [K] from sigma_max (0) to
    sigma_min (1), then 0; equal fractions are the Karras grid of K points."""
    hp = self.hparams
    return np.concatenate([timesteps.karras_map(1.0 - fractions, hp.sigma_min, hp.sigma_max, hp.rho), [0.0]])

  def sampling_plan(self, nfe, conditional: bool, guidance=None, solver=None, grid=None):
    """The SamplingPlan of `sample` with `nfe` network calls: the Karras grid, or `grid` (a stored one: the
    solver's descending sigmas, ending at 0)."""
    guidance = self.hparams.guidance if guidance is None else guidance
    solver = solver or self.hparams.solver
    make_grid = self.sampling_grid if grid is None else sampling.fixed_grid(grid)
    steps = sampling.solver_plan(make_grid, solver,
                                 sampling.drift_evaluations(nfe, True if conditional else None, guidance),
                                 noise_level=paths.EDMPath().sigma)
    return sampling.SamplingPlan(steps, guidance=guidance, solver=solver)

  def sample(self, params, key, n, plan, labels=None, noise=None):
    """Samples [n, *data_shape] from x = sigma_max eps (eps = `noise` if given) along `plan`."""
    eps = jax.random.normal(key, (n,) + self.data_shape) if noise is None else noise
    x = self.hparams.sigma_max * eps
    denoise = self.conditioning.guided(lambda x, sigma, y: self.denoise(params, x, sigma, y=y), labels, plan.guidance)

    def drift(x, sigma):
      return (x - denoise(x, sigma)) / paths.expand_to(sigma, x)

    return sampling.solve_plan(drift, x, plan.steps, plan.solver)

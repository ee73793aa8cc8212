"""Sampling a teacher as it is: method 'teacher' trains nothing; its sampler is an ODE solve of the teacher run's
(method.teacher) denoiser on the EDM path, guided by method.guidance, so that --mode=sample writes a trained or
imported teacher's own samples (an imported Stable Diffusion pipeline at its usual guidance and steps:
configs/sd15/teacher.py, configs/sdxl/teacher.py) and --mode=eval measures them.

  dx/dsigma = (x - D_w(x; sigma)) / sigma,   D_w = D_null + w (D_y - D_null),   x_start = sqrt(sigma_0^2 + s^2) eps

D is the teacher's prediction of x0 on the EDM path, converted exactly from its readout (a DDPM epsilon, a flow
velocity, an EDM denoiser: inputs.Teacher.prediction); guiding D is guiding epsilon, as the diffusers pipelines do,
since both are linear in it. s is method.data_std: diffusers' init_noise_sigma = sqrt(sigma_max^2 + 1) for SD's
unit-variance latents, 0 for EDM's start sigma_max eps. The grid (`GRIDS`, method.grid):
- 'karras': Karras et al.'s grid from method.sigma_max to sigma_min (rho), then 0, as the edm method samples.
- 'ddpm_leading': the noise levels of the teacher's own DDPM timesteps (readouts 'sd', 'sd_v', 'dit') spaced as
  diffusers' timestep_spacing='leading' with method.steps_offset (SD's and SDXL's scheduler configs: 50 steps are
  timesteps 981, 961, ..., 1), then 0. Euler on it is diffusers' EulerDiscreteScheduler, SDXL's default scheduler,
  step for step (the network sees the same scaled input and timestep); SD 1.5's default, PNDM (PLMS, a 4th-order
  multistep method on the same timesteps), has no counterpart here.
"""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fewstep_jax import paths, sampling, timesteps
from fewstep_jax.errors import ConfigError
from fewstep_jax.inputs import TeacherInput
from fewstep_jax.methods.base import EDM_SIGMA_DEFAULTS, Method, require_teacher
from fewstep_jax.methods.registry import register
from fewstep_jax.train.state import TrainState


def karras_grid(method, num_steps: int):
  """Descending Karras sigmas (num_steps of them) from sigma_max to sigma_min, then 0."""
  hp = method.hparams
  return np.append(np.asarray(timesteps.karras_sigmas(num_steps, hp.sigma_min, hp.sigma_max, hp.rho)), 0.0)


def ddpm_leading_grid(method, num_steps: int):
  """The teacher's training noise levels at diffusers' 'leading' timesteps (descending), then 0."""
  table = paths.DDPM_SCHEDULES[method.teacher.readout.name]()
  steps = timesteps.leading_timesteps(num_steps, len(table), method.hparams.steps_offset)
  return np.append(table[steps], 0.0)


GRIDS = {'karras': karras_grid, 'ddpm_leading': ddpm_leading_grid}


@register('teacher')
class TeacherSampler(Method):
  """The teacher run's own samples (see the module docstring): no network of its own, nothing to train."""
  trains = False
  ode_solvers = sampling.SOLVERS

  @classmethod
  def defaults(cls):
    return ml_collections.ConfigDict(dict(
        teacher='',              # Workdir of the teacher run (trained, or made by tools.import_checkpoint).
        guidance=1.0,            # CFG scale (two teacher calls a step when != 1).
        solver='euler',          # 'euler' | 'heun' (sampling.SOLVERS).
        grid='karras',           # A key of GRIDS: 'karras' | 'ddpm_leading'.
        **EDM_SIGMA_DEFAULTS,    # The 'karras' grid's ends and rho (sigma_data is unused).
        steps_offset=1,          # 'ddpm_leading': added to every timestep, as diffusers' steps_offset.
        data_std=0.0,            # The start is sqrt(sigma_0^2 + data_std^2) eps (1: diffusers' SD samplers).
    ))

  @classmethod
  def inputs(cls, config):
    return {'teacher': TeacherInput(config.method.teacher)}

  def __init__(self, config, **build):
    super().__init__(config, **build)
    hp = self.hparams
    if hp.grid not in GRIDS:
      raise ConfigError(f'unknown method.grid {hp.grid!r}; known: {sorted(GRIDS)}')
    self.teacher = require_teacher(self.given_inputs, self.name)
    if hp.grid == 'ddpm_leading' and self.teacher.readout.name not in paths.DDPM_SCHEDULES:
      raise ConfigError(f"method.grid='ddpm_leading' steps on a DDPM network's timesteps, and the teacher's readout "
                        f'{self.teacher.readout.name!r} has none (those that do: {sorted(paths.DDPM_SCHEDULES)}); use '
                        "method.grid='karras'")
    self.denoise = self.teacher.prediction(paths.EDMPath(), 'x0')

  def init(self, key, frozen=None) -> TrainState:
    """The teacher's parameters as the state's frozen['teacher']: no network is trained."""
    del key
    return TrainState(step=jnp.zeros((), jnp.int32), nets={}, frozen=dict(frozen or {}), extra={})

  def sampling_params(self, state, name: str | None = None):
    del name  # The teacher has one parameter copy: the one its run serves as a teacher.
    return state.frozen['teacher']

  def step(self, state, batch, key, **options):
    raise ConfigError("method 'teacher' trains nothing: sample the teacher with --mode=sample or --mode=eval")

  def sampling_plan(self, nfe, conditional: bool, guidance=None, solver=None, grid=None):
    """The SamplingPlan of `sample` with `nfe` teacher calls on method.grid (or `grid`, a stored one)."""
    guidance = self.hparams.guidance if guidance is None else guidance
    solver = solver or self.hparams.solver
    make_grid = functools.partial(GRIDS[self.hparams.grid], self) if grid is None else sampling.fixed_grid(grid)
    steps = sampling.solver_plan(make_grid, solver,
                                 sampling.drift_evaluations(nfe, True if conditional else None, guidance),
                                 noise_level=paths.EDMPath().sigma)
    return sampling.SamplingPlan(steps, guidance=guidance, solver=solver)

  def sample(self, params, key, n, plan, labels=None, noise=None):
    """Samples [n, *data_shape] from x = sqrt(sigma_0^2 + data_std^2) eps (eps = `noise` if given) along `plan`."""
    eps = jax.random.normal(key, (n,) + self.data_shape) if noise is None else noise
    x = jnp.sqrt(plan.steps.grid[0] ** 2 + self.hparams.data_std ** 2) * eps
    denoise = self.conditioning.guided(lambda x, sigma, y: self.denoise(params, x, sigma, y=y), labels, plan.guidance)

    def drift(x, sigma):
      return (x - denoise(x, sigma)) / paths.expand_to(sigma, x)

    return sampling.solve_plan(drift, x, plan.steps, plan.solver)

"""LCM (latent consistency models, Luo et al. 2023): consistency distillation of a guided teacher on the DDIM
skipping-step grid of a DDPM schedule, with the guidance scale w as an input of the student; LCM-LoRA (Luo et al.
2023b) is the same with a LoRA student and no target network.

On a DDPM schedule (abar_t, t = 0..999), with K = method.ddim_timesteps and k = 1000 / K (50 and 20):
  n ~ U{0..K-1},  t_start = (n + 1) k - 1,  t_end = max(t_start - k, 0),  w ~ U[w_min, w_max]
  z = sqrt(abar_start) x + sqrt(1 - abar_start) eps                                     (the VP latent)
  f_theta(z, t, w) = c_skip(t) z + c_out(t) x0_theta(z, t, w),
      c_skip = s^2 / ((10 t)^2 + s^2), c_out = 10 t / sqrt((10 t)^2 + s^2), s = 0.5   (LCM's boundary scalings)
  x0_g = x0_c + w (x0_c - x0_u),  eps_g likewise (the teacher, conditioned and on the null condition)
  z_prev = sqrt(abar_end) x0_g + sqrt(1 - abar_end) eps_g                              (one DDIM step, k apart)
  loss = d(f_theta(z, t_start, w), sg f_theta-(z_prev, t_end, w)),  d = mean squared error (or Huber, c = 0.001)
with theta- the student's EMA at rate 0.95 (target_ema; 0: theta- = sg theta, LCM-LoRA). Here every quantity is on
the codebase's EDM path, where the DDPM latent z at t is x_sigma / sqrt(1 + sigma_t^2) with sigma_t^2 =
(1 - abar_t) / abar_t: the DDIM step is the EDM move x0_g + (sigma_end / sigma_start)(x_sigma - x0_g), x0_theta is
the student's readout (`parameterization`: 'sd' for an SD U-Net's epsilon) converted to x0, and the times are the
grid's sigmas, whose DDPM timesteps the readout and the scalings recover exactly (a log-sigma lookup in the same
float32 table).

The student is fed w where its network takes it: sd_unet's `network.guidance_embedding` (LCM's time_cond_proj_dim)
reads y['guidance'] = w. Without it (LCM-LoRA) w only guides the teacher. A student without `method.init_from` starts
from the teacher's weights, its guidance embedding's projection fresh (diffusers' script loads the teacher's state
dict with strict=False); with init_from (a LoRA student's base), from that run.

Sampling is LCMScheduler's: the timesteps of the K-step grid at floor(linspace(0, K, n, endpoint=False)) from the top
(4 steps: 999, 759, 499, 259), at each f at w = method.sample_w (a pipeline's guidance_scale - 1), then re-noising
to the next timestep; no CFG calls (LCM's guidance is in the student).

Official code followed: huggingface/diffusers examples/consistency_distillation/train_lcm_distill_sd_wds.py (the
training loop's steps 2 to 12, `DDIMSolver`, `scalings_for_boundary_conditions`, `guidance_scale_embedding`; the
LCM authors' port, also used for LCM-LoRA in train_lcm_distill_lora_sd_wds.py) and diffusers' `LCMScheduler`
(set_timesteps, step). Defaults are the script's: w in [5, 15], K = 50, timestep scaling 10, squared L2 (Huber with
c = 0.001 as an option), EMA 0.95; its AdamW (lr 1e-4, weight decay 1e-2, grad clip 1) is the config's.
Deviations: none in the objective. The paper gives w in [2, 14] and the Huber loss; the configs say which they use.
"""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fewstep_jax import distances, paths
from fewstep_jax.inputs import TeacherInput
from fewstep_jax.methods.base import (TEACHER_DEFAULTS, ConsistencySampled, ConsistencySampler, SingleNetworkMethod,
                                     StepContext, check_choice, require_teacher)
from fewstep_jax.methods.ctm import merge_by_path
from fewstep_jax.methods.registry import register

# What f is compared with: per-sample [B] from (a, b, c).
LCM_DISTANCES = {
    'l2': lambda a, b, c: distances.squared_l2(a, b),
    'huber': lambda a, b, c: distances.per_sample_mean(distances.elementwise_pseudo_huber(a - b, c)),
}


def lcm_timesteps(num_steps: int, ddim_timesteps: int, train_timesteps: int = 1000) -> list:
  """LCMScheduler.set_timesteps' timesteps of an num_steps-step sampler on the ddim_timesteps-point grid
  (k (i + 1) - 1), from the top: the grid's entries at floor(linspace(0, ddim_timesteps, num_steps, endpoint=False))."""
  if not 1 <= num_steps <= ddim_timesteps:
    raise ValueError(f'LCM samples with 1 to {ddim_timesteps} steps (method.ddim_timesteps), not {num_steps}')
  grid = (np.arange(1, ddim_timesteps + 1) * (train_timesteps // ddim_timesteps) - 1)[::-1]
  return [int(t) for t in grid[np.floor(np.linspace(0, ddim_timesteps, num_steps, endpoint=False)).astype(int)]]


class LCMSampler(ConsistencySampler):
  """ConsistencySampler on LCM's timesteps (`lcm_timesteps`) of the DDPM schedule `sigmas`."""

  def __init__(self, consistency_fn, sigmas, ddim_timesteps: int, **fields):
    self.sigmas, self.ddim_timesteps = sigmas, ddim_timesteps
    top = float(sigmas[-1])
    super().__init__(consistency_fn, paths.EDMPath(), start_time=top, start_scale=math.sqrt(1.0 + top * top),
                     intermediate_times=(), **fields)

  def schedule(self, nfe: int):
    return [float(self.sigmas[t]) for t in lcm_timesteps(nfe, self.ddim_timesteps, len(self.sigmas))]


@register('lcm')
class LatentConsistencyDistillation(ConsistencySampled, SingleNetworkMethod):
  """LCM / LCM-LoRA (module docstring)."""
  starts_from_run = True
  target_network = 'own_ema'

  @classmethod
  def readout_of(cls, config):
    return paths.readout(config.method.parameterization, config.method.sigma_data)

  @classmethod
  def defaults(cls):
    return ml_collections.ConfigDict(dict(
        **TEACHER_DEFAULTS,
        parameterization='sd',    # The student's (and its start's) readout: 'sd' | 'sd_v' (SD U-Nets), 'edm', ...
        schedule='sd',            # The DDPM schedule of the grid (paths.DDPM_SCHEDULES): 'sd' (SD's scaled-linear).
        ddim_timesteps=50,        # K: the grid of the DDIM skipping step k = 1000 / K.
        timestep_scaling=10.0,    # The boundary scalings' t multiplier.
        sigma_data=0.5,           # The boundary scalings' s.
        w_min=5.0,                # w ~ U[w_min, w_max] (LCM's w: the teacher's cond + w (cond - uncond)).
        w_max=15.0,
        target_ema=0.95,          # theta-'s EMA rate; 0: theta- = sg theta (LCM-LoRA).
        distance='l2',            # 'l2' (the script's default) | 'huber' (the paper's, elementwise, c = huber_c).
        huber_c=0.001,
        sample_w=7.5,             # w at sampling (a pipeline's guidance_scale 8.5), for a student that takes w.
        init_from='',             # A run to start from (a LoRA student's base); '' = the teacher's weights.
    ))

  @classmethod
  def inputs(cls, config):
    return {**super().inputs(config), 'teacher': TeacherInput(config.method.teacher)}

  def __init__(self, config, **build):
    super().__init__(config, **build)
    hp = self.hparams
    check_choice(hp, 'distance', LCM_DISTANCES)
    check_choice(hp, 'schedule', paths.DDPM_SCHEDULES)
    if 1000 % hp.ddim_timesteps:
      raise ValueError(f'method.ddim_timesteps={hp.ddim_timesteps} must divide the 1000 DDPM timesteps')
    if not 0 <= hp.w_min <= hp.w_max:
      raise ValueError(f'method.w_min={hp.w_min} and w_max={hp.w_max}: need 0 <= w_min <= w_max')
    self.sigmas = np.asarray(paths.DDPM_SCHEDULES[hp.schedule](), np.float32)
    self.takes_w = bool(config.network.get('guidance_embedding', 0))
    teacher = require_teacher(self.given_inputs, self.name)
    self.teacher_x0 = teacher.prediction(paths.EDMPath(), 'x0')
    self.student_x0 = paths.reparameterize(self.readout.model(self.apply), self.readout.path, self.readout.kind,
                                           paths.EDMPath(), 'x0')
    self.sampler = LCMSampler(self.consistency_fn, self.sigmas, hp.ddim_timesteps, data_shape=self.data_shape,
                              conditioning=self.conditioning, guidance=1.0, gamma=1.0)

  def init(self, key, frozen=None):
    """Without method.init_from: the student starts from the teacher's weights, any parameter the teacher lacks (the
    guidance embedding's cond_proj) at its fresh initialisation."""
    frozen = dict(frozen or {})
    if 'student_init' not in frozen and 'teacher' in frozen and not self.hparams.init_from:
      frozen['student_init'] = merge_by_path(self.student.init_params(key, self.data_shape), frozen['teacher'])
    return super().init(key, frozen)

  def own_target_rate(self, step):
    del step
    return None if not self.hparams.target_ema else jnp.asarray(self.hparams.target_ema, jnp.float32)

  def timesteps(self, sigma):
    """The DDPM timesteps [B] of noise levels on the grid (exact for the table's sigmas)."""
    return paths.ddpm_timestep(sigma, self.sigmas)

  def boundary_scalings(self, sigma):
    """(c_skip, c_out) [B] of LCM at the timestep of sigma."""
    scaled = self.hparams.timestep_scaling * self.timesteps(sigma)
    s2 = self.hparams.sigma_data**2
    return s2 / (scaled**2 + s2), scaled / jnp.sqrt(scaled**2 + s2)

  def student_condition(self, y, w):
    """y with the guidance scale the student reads (y['guidance'] = w [B]) where its network takes it."""
    return {**y, 'guidance': w} if self.takes_w and y is not None else y

  def consistency_fn(self, params, x, sigma, y=None, key=None, w=None):
    """f(z, t, w) in the DDPM latent's units, for x = x_sigma on the EDM path [B, ...] at sigma [B]: c_skip z +
    c_out x0_theta, z = x / sqrt(1 + sigma^2). w [B] (default method.sample_w) where the network takes it."""
    sigma = jnp.broadcast_to(sigma, x.shape[:1])
    if w is None:
      w = jnp.full(x.shape[:1], self.hparams.sample_w, jnp.float32)
    c_skip, c_out = self.boundary_scalings(sigma)
    x0 = self.student_x0(params, x, sigma, y=self.student_condition(y, w), key=key)
    z = x / paths.expand_to(jnp.sqrt(1.0 + sigma**2), x)
    return paths.expand_to(c_skip, x) * z + paths.expand_to(c_out, x) * x0

  def loss(self, params, batch, key, ctx=StepContext()):
    hp = self.hparams
    x, y = batch['x'], batch.get('y')
    batch_size = x.shape[0]
    index_key, noise_key, w_key = jax.random.split(key, 3)
    ratio = len(self.sigmas) // hp.ddim_timesteps
    index = jax.random.randint(index_key, (batch_size,), 0, hp.ddim_timesteps)
    t_start = (index + 1) * ratio - 1
    t_end = jnp.maximum(t_start - ratio, 0)
    table = jnp.asarray(self.sigmas)
    sigma_start, sigma_end = table[t_start], table[t_end]
    w = hp.w_min + (hp.w_max - hp.w_min) * jax.random.uniform(w_key, (batch_size,))
    x_start = x + paths.expand_to(sigma_start, x) * jax.random.normal(noise_key, x.shape, x.dtype)
    online = self.consistency_fn(params, x_start, sigma_start, y, w=w)
    # The teacher's DDIM step under LCM's guidance, cond + w (cond - uncond) = uncond + (1 + w)(cond - uncond), on x0
    # (and so on eps).
    teacher = ctx.frozen['teacher']
    x0_guided = self.conditioning.guided(lambda z, s, y: self.teacher_x0(teacher, z, s, y=y), y, 1.0 + w)(
        x_start, sigma_start)
    x_end = x0_guided + paths.expand_to(sigma_end / sigma_start, x) * (x_start - x0_guided)
    target_params = params if ctx.target is None else ctx.target
    target = jax.lax.stop_gradient(self.consistency_fn(target_params, jax.lax.stop_gradient(x_end), sigma_end, y,
                                                       w=w))
    loss = jnp.mean(LCM_DISTANCES[hp.distance](online, target, hp.huber_c))
    return loss, {'loss': loss, 'w': jnp.mean(w), 't_start': jnp.mean(t_start.astype(jnp.float32))}

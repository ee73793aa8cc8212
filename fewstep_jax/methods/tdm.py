"""Trajectory distribution matching, TDM (Luo et al. 2025). Roles, schedule and the few-step
sampler: score_distillation.py.

The student is a K-step deterministic sampler on the stage levels sigma_0 = sigma_init > sigma_1 > ... >
sigma_{K-1} (student_sigmas) and sigma_K = 0: at stage k it predicts x̂0 = G(x_k; sigma_k) and makes the DDIM move
x_{k+1} = x̂0 + sigma_{k+1} (x_k - x̂0) / sigma_k (sample_gamma = 0). TDM matches, stage by stage, the distribution
of the student's own stage outputs x_{k+1} to the teacher's marginal at sigma_{k+1}:
  1. a stage k ~ U{0..K-1}; x_k from the student's own chain, without gradient (backward simulation);
  2. x̂0 = G(x_k; sigma_k) with gradient; the deterministic move to the stage boundary b = sigma_{k+1} gives x_b;
  3. re-noise to a level s above the boundary: x_s = x_b + sqrt(s^2 - b^2) n, with s on the 1000-level Karras grid
     between indices max(min_index, index(b)) and N - 1 - top_margin (the paper's [max(20, t_mid), T - 10]), or
     restricted to the stage (s in [sigma_{k+1}, sigma_k]) with renoise='stage';
  4. generator: target = sg(x̂0 + (x0_teacher - x0_fake)) with x0_teacher = D_real(x_s; s) (CFG-guided by
     teacher_guidance, which is the paper's x0_teacher + (cfg - 1)(x0_teacher,y - x0_teacher,∅)) and x0_fake =
     D_fake(x_s; s); loss = mean_B d(x̂0, target) / sg(mean_chw |x̂0 - x0_teacher|), d the squared error summed over
     the sample (or elementwise pseudo-Huber with c = huber_c, distance='pseudo_huber');
  5. critic: denoising score matching of the re-noised stage outputs. x_s | x_b is Gaussian with variance s^2 - b^2,
     so its exact DSM target in x0 units is x_s - s^2 (x_s - x_b) / (s^2 - b^2) (it is x_b when b = 0). Its variance
     grows as s approaches b; TDM's weight min(SNR, snr_clip) with SNR = 1 / s^2 (the paper's min(SNR, 5)) times
     the importance weight (s^2 - b^2) / s^2, the ratio of the DSM target's noise variance at b = 0 to its variance
     here, keeps it bounded.
The student's learning rate is a fraction (1/5) of the critic's: configs set optim.lr = critic_optim.lr / 5.
How we read step 5's target and importance weight (from the paper's description, not its code) is the derivation
above; the paper leaves both open.
"""
import jax
import jax.numpy as jnp
import ml_collections

from fewstep_jax import timesteps
from fewstep_jax.distances import elementwise_pseudo_huber, per_sample_mean
from fewstep_jax.methods.base import StepContext, batch_rows, check_choice
from fewstep_jax.methods.registry import register
from fewstep_jax.methods.score_distillation import ScoreDistillation
from fewstep_jax.paths import expand_to

RENOISE_RANGES = ('trajectory', 'stage')


@register('tdm')
class TDM(ScoreDistillation):

  @classmethod
  def defaults(cls):
    config = super().defaults()
    config.update(ml_collections.ConfigDict(dict(
        student_sigmas=(10.0, 2.0, 0.5),  # Four stages with sigma_init = 80.
        sample_gamma=0.0,                 # The deterministic DDIM move, in training and sampling.
        renoise='trajectory',             # 'trajectory': s up to the top of the grid; 'stage': s within the stage.
        min_index=20,                     # Lowest re-noise index of the 1000-level ascending Karras grid.
        top_margin=10,                    # Highest re-noise index: N - 1 - top_margin.
        snr_clip=5.0,                     # The critic's weight min(SNR, snr_clip), SNR = 1 / s^2.
        distance='l2',                    # 'l2' | 'pseudo_huber' (elementwise, c = huber_c).
        huber_c=1e-3,
    )))
    del config['critic_weighting']  # The critic's weight is snr_clip's (critic_loss).
    return config

  def __init__(self, config, **build):
    super().__init__(config, **build)
    hp = self.hparams
    check_choice(hp, 'renoise', RENOISE_RANGES)
    check_choice(hp, 'distance', ('l2', 'pseudo_huber'))
    if self.use_gan:
      raise ValueError('TDM has no GAN head: set method.gan_weight and method.gan_generator_weight to 0')

  def stage_boundary(self, sigma_in):
    """b [B]: the level the stage that starts at sigma_in ends at (the next student level, or 0 after the last)."""
    levels = jnp.asarray(self.levels + (0.0,), jnp.float32)
    stage = jnp.argmin(jnp.abs(levels[:-1][None, :] - sigma_in[:, None]), axis=1)
    return levels[stage + 1], levels[stage]

  def renoise_level(self, key, boundary, start):
    """s [B]: a level of the 1000-level ascending Karras grid at or above the stage boundary (see module doc)."""
    hp = self.hparams
    num = hp.num_train_sigmas
    grid = timesteps.karras_sigmas(num, hp.sigma_min, hp.sigma_max, hp.rho, ascending=True)
    lowest = jnp.maximum(hp.min_index, jnp.searchsorted(grid, boundary))
    highest = jnp.full_like(lowest, num - 1 - hp.top_margin)
    if hp.renoise == 'stage':
      highest = jnp.minimum(highest, jnp.searchsorted(grid, start, side='right') - 1)
    highest = jnp.maximum(highest, lowest)
    u = jax.random.uniform(key, boundary.shape)
    index = jnp.minimum(lowest + jnp.floor(u * (highest - lowest + 1)).astype(lowest.dtype), highest)
    return grid[index]

  def stage_output(self, x_hat0, x_in, sigma_in, key):
    """(x_s, s, b, x_b): the DDIM move of the stage to its boundary b, re-noised to s."""
    level_key, noise_key = jax.random.split(key)
    boundary, start = self.stage_boundary(sigma_in)
    eps_hat = jax.lax.stop_gradient(self.path.eps_from_x0(x_in, x_hat0, sigma_in))
    x_b = x_hat0 + expand_to(boundary, x_hat0) * eps_hat
    s = self.renoise_level(level_key, boundary, start)
    fresh = jnp.sqrt(jnp.maximum(s**2 - boundary**2, 0.0))
    x_s = x_b + expand_to(fresh, x_b) * jax.random.normal(noise_key, x_b.shape, x_b.dtype)
    return x_s, s, boundary, x_b

  def generator_loss(self, x, y, key, ctx, x_in=None, sigma_in=None):
    x_s, s, _, _ = self.stage_output(x, x_in, sigma_in, key)
    x_s = jax.lax.stop_gradient(x_s)
    x0_teacher = self.real_denoiser(ctx.frozen, y)(x_s, s)
    x0_fake = self.denoise(ctx.nets['critic'], x_s, s, y)
    target = jax.lax.stop_gradient(x + (x0_teacher - x0_fake))
    scale = jax.lax.stop_gradient(per_sample_mean(jnp.abs(x - x0_teacher)))
    if self.hparams.distance == 'l2':
      distance = jnp.square(x - target)
    else:
      distance = elementwise_pseudo_huber(x - target, self.hparams.huber_c)
    loss = jnp.mean(jnp.sum(distance.reshape(x.shape[0], -1), 1) / scale)
    return loss, {'tdm_loss': loss}

  @staticmethod
  def critic_target(x_s, x_b, s, b):
    """The critic's regression target [B, ...]: x_s - s^2 (x_s - x_b) / (s^2 - b^2), whose mean given x_s is the
    denoiser at level s of the re-noised stage outputs' distribution (Tweedie); x_b when b = 0."""
    gap = jnp.maximum(s**2 - b**2, 1e-12)
    return x_s - expand_to(s**2 / gap, x_s) * (x_s - x_b)

  def critic_loss(self, trained, batch, key, ctx=StepContext()):
    student = ctx.nets['student']
    y, n = batch.get('y'), batch_rows(batch)
    input_key, stage_key = jax.random.split(key)
    x_in, sigma_in = self.generator_input(student, input_key, n, y)
    x_hat0 = jax.lax.stop_gradient(self.denoise(student, x_in, sigma_in, y))
    x_s, s, b, x_b = self.stage_output(x_hat0, x_in, sigma_in, stage_key)
    target = self.critic_target(x_s, x_b, s, b)
    weight = jnp.minimum(1.0 / s**2, self.hparams.snr_clip) * (s**2 - b**2) / s**2
    denoised = self.denoise(trained['critic'], x_s, s, y)
    loss = jnp.mean(weight * per_sample_mean(jnp.square(denoised - target)))
    return loss, {'critic_loss': loss}

"""Score identity distillation, SiD (Zhou et al. 2024), and score implicit matching, SIM (Luo et al. 2024),
Roles, critic and schedule: score_distillation.py; here 1:1 updates, critic first, the critic's
levels log-normal (EDM's), and the generator from sigma_init = 2.5 (SiD).

Unlike DMD, the gradient flows into x_g = G(z) through both frozen denoisers' inputs. The level: the Karras map of
u ~ U[0, t_max) counted from sigma_min upward, sigma = (sigma_min^(1/rho) + u (sigma_max^(1/rho) -
sigma_min^(1/rho)))^rho, so u = 0 is sigma_min and t_max = 0.8 (level 800 of 1000, the official `--tmax`, "the
largest allowed noise level") is sigma = 24.4; x_t = x_g + sigma n.

SiD:  f_real = D_real(x_t; sigma) (CFG-guided), f_fake = D_fake(x_t; sigma), w = sg(max(mean_chw |x_g - f_real|, 1e-5)),
  loss = mean_B sum_chw (f_real - f_fake) * ((f_real - x_g) - alpha (f_real - f_fake)) / w,   alpha = 1.2.
Followed: mingyuanzhou/SiD, training/sid_loss.py `SID_EDMLoss.generator_loss` (the level map with `1 - rnd_t`, the
weight's clip(min=1e-5)) and training/sid_training_loop.py (fake score first, then the generator, 1:1). Deviations:
the official drops samples whose outputs hold a NaN from the loss and zeroes non-finite parameter gradients; here a
non-finite loss stops the run instead. Its fake-score loss sums over pixels where ours averages (a constant factor
that Adam removes up to its epsilon).

SIM, with the pseudo-Huber distance d(y) = sqrt(||y||^2 + c^2) - c on the score difference
y = sg(s_real - s_fake) = sg(f_real - f_fake) / sigma^2, d'(y) = y / sqrt(||y||^2 + c^2), and time weighting sigma^2:
  loss = mean_B sum_chw d'(y) * (f_real - x_g),
which is SIM's surrogate sigma^2 d'(y)^T (s_real(x_t) - grad log q(x_t | x_g)), since
s_real - grad log q(x_t | x_g) = (f_real - x_g) / sigma^2 on the EDM path. Its gradient (through f_real's input and
x_g) is the gradient of the divergence E sigma^2 d(y) (tests/test_score_distillation.py checks both in closed form).
Because c is in score units, the direction d'(y) saturates to a unit vector at low levels, where ||y|| is large, and
shrinks at high ones. The surrogate is sometimes written with a minus sign; with y = s_real - s_fake the sign that
descends the divergence is plus.
"""
import jax
import jax.numpy as jnp

from fewstep_jax import timesteps
from fewstep_jax.distances import per_sample_mean
from fewstep_jax.methods.registry import register
from fewstep_jax.methods.score_distillation import ScoreDistillation


class ScoreIdentity(ScoreDistillation):
  """What SiD and SIM share: the level distribution, and the generator loss with gradient through x_t."""

  @classmethod
  def defaults(cls):
    config = super().defaults()
    config.update(dict(
        sigma_init=2.5,
        critic_sigmas='lognormal',
        student_every=1,
        critic_first=True,
        t_max=0.8,     # The generator's levels: the Karras map of u ~ U[0, t_max), u = 0 at sigma_min.
    ))
    return config

  def matching_point(self, key, x):
    """(sigma [B], n [B, ...]): the level and the noise of the generator loss at samples x."""
    sigma_key, noise_key = jax.random.split(key)
    hp = self.hparams
    u = jax.random.uniform(sigma_key, (x.shape[0],), maxval=hp.t_max)
    sigma = timesteps.karras_map(u, hp.sigma_min, hp.sigma_max, hp.rho)
    return sigma, jax.random.normal(noise_key, x.shape, x.dtype)

  def predictions(self, x, y, key, ctx):
    """(sigma, f_real, f_fake): both denoisers at x_t = x + sigma n, with gradient into x through their inputs
    (none into their parameters)."""
    sigma, noise = self.matching_point(key, x)
    x_t = self.path.noisy(x, noise, sigma)
    critic = jax.lax.stop_gradient(ctx.nets['critic'])
    return sigma, self.real_denoiser(ctx.frozen, y)(x_t, sigma), self.denoise(critic, x_t, sigma, y)


@register('sid')
class SiD(ScoreIdentity):
  """SiD: the score-identity generator loss with alpha."""

  @classmethod
  def defaults(cls):
    config = super().defaults()
    config.update(dict(alpha=1.2))
    return config

  def generator_loss(self, x, y, key, ctx, x_in=None, sigma_in=None):
    _, f_real, f_fake = self.predictions(x, y, key, ctx)
    weight = jax.lax.stop_gradient(jnp.maximum(per_sample_mean(jnp.abs(x - f_real)), 1e-5))  # The official clip.
    difference = f_real - f_fake
    per_sample = jnp.sum((difference * ((f_real - x) - self.hparams.alpha * difference)).reshape(x.shape[0], -1), 1)
    loss = jnp.mean(per_sample / weight)
    return loss, {'sid_loss': loss}


@register('sim')
class SIM(ScoreIdentity):
  """SIM with the pseudo-Huber distance."""

  @classmethod
  def defaults(cls):
    config = super().defaults()
    config.update(dict(huber_c=1.0))  # c of d, in score units.
    return config

  def generator_loss(self, x, y, key, ctx, x_in=None, sigma_in=None):
    sigma, f_real, f_fake = self.predictions(x, y, key, ctx)
    difference = jax.lax.stop_gradient(f_real - f_fake).reshape(x.shape[0], -1)  # sigma^2 y
    # d'(y) = y / sqrt(||y||^2 + c^2) = sigma^2 y / sqrt(||sigma^2 y||^2 + (c sigma^2)^2).
    norm = jnp.sqrt(jnp.sum(jnp.square(difference), 1) + jnp.square(self.hparams.huber_c * sigma**2))
    direction = (difference / norm[:, None]).reshape(x.shape)
    loss = jnp.mean(jnp.sum((direction * (f_real - x)).reshape(x.shape[0], -1), 1))
    return loss, {'sim_loss': loss}

"""Distribution matching distillation: DMD2 (Yin et al. 2024), DMD (Yin et al. 2023) and
Diff-Instruct / VSD (Luo et al. 2023; Wang et al. 2023). Roles, critic and schedule: score_distillation.py.

Generator gradient (no gradient into either denoiser): sigma from MATCHING_SIGMAS (DMD / DMD2: the ascending
1000-level Karras grid between the min_level and max_level fractions, 2% and 98%: indices 20..980, both included,
as the official tianweiy/DMD2 main/edm/edm_guidance.py `compute_distribution_matching_loss`; Diff-Instruct:
log-normal), x_t = sg(x) + sigma n,
  p_real = x - D_real(x_t; sigma)   (the teacher, CFG-guided with teacher_guidance),
  p_fake = x - D_fake(x_t; sigma)   (the critic),
  DMD / DMD2:     grad = (p_real - p_fake) / mean_chw |p_real|,
  Diff-Instruct:  grad = w(sigma) (p_real - p_fake)   (unnormalised, time-weighted; diff_instruct.py),
  loss = 0.5 mean (x - sg(x - grad))^2,   so d loss / d x = grad / (B D).
The mean over every element (not a per-sample sum) is the DMD2 code's reduction; Adam makes the scale immaterial.

DMD2 adds the GAN head (score_distillation: method.gan_weight 1e-2, gan_generator_weight 3e-3), the two time-scale
rule (student_every=5) and multi-step students with backward simulation (student_sigmas). DMD (v1) updates 1:1 and
adds `regression_weight` (0.25) times d(G(z_ref), y_ref) on teacher ODE pairs generated once and stored
(`python -m fewstep_jax.tools.generate_pairs`, read whole into state.frozen['regression_pairs']), LPIPS in the paper.
"""
import jax
import jax.numpy as jnp

from fewstep_jax import distances, paths
from fewstep_jax.data import ode_pairs
from fewstep_jax.distances import per_sample_mean
from fewstep_jax.inputs import ArraysInput
from fewstep_jax.methods.base import StepContext, check_choice
from fewstep_jax.methods.registry import register, register_preset
from fewstep_jax.methods.score_distillation import CRITIC_SIGMAS, ScoreDistillation, karras_grid_sigma


# Levels of the generator's matching gradient: (key, n, hparams) -> sigma [n].
MATCHING_SIGMAS = {
    # DMD / DMD2: indices min_level N .. max_level N of the ascending Karras grid.
    'karras_grid': lambda key, n, hp: karras_grid_sigma(key, n, hp, hp.min_level, hp.max_level),
    # Diff-Instruct: EDM's ln sigma ~ N(p_mean, p_std^2), the critic's log-normal levels.
    'lognormal': CRITIC_SIGMAS['lognormal'],
}


class DistributionMatching(ScoreDistillation):
  """The DMD family's generator loss; `matching_gradient` says how p_real - p_fake is scaled."""

  @classmethod
  def defaults(cls):
    config = super().defaults()
    config.update(dict(
        matching_sigmas='karras_grid',  # The matching levels: MATCHING_SIGMAS.
        min_level=0.02,   # karras_grid: indices min_level N .. max_level N (both in) of the Karras grid.
        max_level=0.98,
    ))
    return config

  def __init__(self, config, **build):
    super().__init__(config, **build)
    check_choice(self.hparams, 'matching_sigmas', MATCHING_SIGMAS)

  def matching_point(self, key, x):
    """(sigma [B], n [B, ...]): the level and the noise of the generator gradient at samples x."""
    sigma_key, noise_key = jax.random.split(key)
    sigma = MATCHING_SIGMAS[self.hparams.matching_sigmas](sigma_key, x.shape[0], self.hparams)
    return sigma, jax.random.normal(noise_key, x.shape, x.dtype)

  def matching_gradient(self, p_real, p_fake, sigma):
    """DMD / DMD2: the normalised difference (p_real - p_fake) / mean_chw |p_real| [B, ...]."""
    del sigma
    return (p_real - p_fake) / paths.expand_to(per_sample_mean(jnp.abs(p_real)), p_real)

  def generator_loss(self, x, y, key, ctx, x_in=None, sigma_in=None):
    del x_in, sigma_in
    sigma, noise = self.matching_point(key, x)
    x_sg = jax.lax.stop_gradient(x)
    x_t = self.path.noisy(x_sg, noise, sigma)
    p_real = x_sg - self.real_denoiser(ctx.frozen, y)(x_t, sigma)
    p_fake = x_sg - self.denoise(ctx.nets['critic'], x_t, sigma, y)
    grad = jnp.nan_to_num(self.matching_gradient(p_real, p_fake, sigma))
    loss = 0.5 * jnp.mean(jnp.square(x - jax.lax.stop_gradient(x - grad)))
    return loss, {'matching_loss': loss, 'matching_grad_norm': jnp.sqrt(jnp.mean(jnp.square(grad)))}


# DMD2: normalised matching gradient, optional GAN head, critic updated every step and the student every 5th; the
# paper's code updates the generator first, then the critic.
register_preset('dmd2', DistributionMatching, student_every=5, critic_first=False)


@register('dmd')
class DMD(DistributionMatching):
  """DMD (v1): 1:1 updates and a regression loss on stored teacher ODE pairs."""

  @classmethod
  def defaults(cls):
    config = super().defaults()
    config.update(dict(
        regression_pairs='',        # Directory of teacher ODE pairs (python -m fewstep_jax.tools.generate_pairs).
        regression_weight=0.25,
        regression_batch=32,        # Pairs per student update.
        regression_distance='l2',   # 'l2' | 'pseudo_huber' | 'lpips' (the paper's), distances.py.
        huber_c=-1.0,
        lpips_weights='',
        lpips_resolution=224,
    ))
    return config

  @classmethod
  def inputs(cls, config):
    """Adds the stored pairs {'noise', 'x'[, 'y']} and the distance's weights (LPIPS)."""
    hp = config.method
    specs = dict(super().inputs(config), regression_pairs=ArraysInput(
        lambda data_shape, num_classes: ode_pairs.load_pairs(hp.regression_pairs, data_shape, num_classes),
        'method.regression_pairs'))
    load = distances.weights_loader(hp.regression_distance, lpips_weights=hp.lpips_weights)
    if load:
      specs['distance'] = ArraysInput(lambda data_shape, num_classes: load(), 'method.lpips_weights')
    return specs

  def __init__(self, config, **build):
    super().__init__(config, **build)
    hp = self.hparams
    self.regression_distance = distances.make_distance(
        hp.regression_distance, self.data_shape, huber_c=hp.huber_c, lpips_weights=hp.lpips_weights,
        lpips_resolution=hp.lpips_resolution)

  def student_loss(self, params, batch, key, ctx=StepContext()):
    frozen = ctx.frozen
    matching_key, pair_key = jax.random.split(key)
    loss, metrics = super().student_loss(params, batch, matching_key, ctx)
    pairs = frozen['regression_pairs']
    index = jax.random.randint(pair_key, (self.hparams.regression_batch,), 0, pairs['noise'].shape[0])
    y_ref = pairs['y'][index] if 'y' in pairs else None
    sigma = jnp.full(index.shape, self.hparams.sigma_init)
    x_ref = self.denoise(params, self.hparams.sigma_init * pairs['noise'][index], sigma, y_ref)
    regression = jnp.mean(self.regression_distance.fn(x_ref, pairs['x'][index], frozen.get('distance')))
    loss = loss + self.hparams.regression_weight * regression
    return loss, dict(metrics, regression_loss=regression, loss=loss)

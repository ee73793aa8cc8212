"""f-distill (Xu et al. 2025, one-step diffusion models with f-divergence distribution matching): DMD2 whose
generator gradient is re-weighted, sample by sample, by h(r) = r^2 f''(r) of an f-divergence at the density ratio
r = p_data / q_student, read from the GAN head's logit as r = exp(l); roles, critic and schedule:
score_distillation.py, the matching gradient: dmd.py.

At the matching point x_t = x + sigma n (sigma from the Karras grid, n ~ N(0, I)):
  l = head(bottleneck(x_t, sigma)),   r = clip(exp(clip(sg l, -10, 10)), ratio_lower, ratio_upper),
  r <- r / (b_k + 1e-6)   with b_k the running mean of r in sigma's bin k (ratio_bins linear bins of
                          [sigma_min, sigma_max]; b_k <- ratio_ema b_k + (1 - ratio_ema) mean_{batch in k} r),
  h = H[f](r) / (mean_batch H[f](r) + 1e-6),
  grad = h (p_real - p_fake) / mean_chw |p_real|,   loss = 0.5 mean (x - sg(x - grad))^2
         + gan_generator_weight mean softplus(-l)    (the generator's GAN side at the same x_t).
With f = reverse KL (h = 1) and no GAN the generator loss is DMD2's exactly.

Followed: NVlabs/FastGen fastgen/methods/distribution_matching/f_distill.py `FdistillModel` (`_get_f_div_weighting_h`:
the clips, the binned ratio normalisation before it is used, the batch-mean normalisation of h; `_student_update_step`:
one x_t for the matching term, the ratio and the generator's GAN term, the head on the frozen teacher's features) and
`all_f_div_weighting_function` (F_WEIGHTS below; its 'rkl' entry, a scalar, is written as ones here),
fastgen/methods/common_loss.py `variational_score_distillation_loss` and `denoising_score_matching_loss` (the critic's
loss: the unweighted mean squared error of its x0 prediction, critic_weighting='uniform', where DMD2's official code
weights it by EDM's lambda(sigma)), fastgen/methods/distribution_matching/dmd2.py
`_fake_score_discriminator_update_step`, and fastgen/configs/methods/config_f_distill.py with
experiments/EDM/config_f_distill_{cifar10,in64}.py (the defaults and the paper-row configs).
Deviations: one GAN head on the bottleneck (FastGen's CIFAR-10 config reads three feature resolutions); the head's
features are written as a second teacher call at the same x_t (FastGen takes them from the teacher pass itself; XLA
shares the two calls' layers up to the bottleneck: the compiled student update is 0.94 of its passes counted one by one,
experiments/bench.py --passes on configs/toy/f_distill.py); the mean |p_real| has no 1e-6 (DMD2's form, so that reverse
KL equals DMD2 exactly; a zero is caught by nan_to_num); the critic's levels are the whole 1000-level grid (FastGen
draws 2..998 as for the matching term).
Schedule: the student every 5th step and the critic with its head on the four steps between (FastGen's
`get_optimizers`; critic_on_student_steps=False); DMD2's own schedule, the critic on every step, is True. On the toy at
3000 steps the two give 1-NFE sliced W2 0.0036 and 0.0040 (EMA 0.995), within a seed's spread.
"""
import jax
import jax.numpy as jnp

from fewstep_jax import paths
from fewstep_jax.distances import per_sample_mean
from fewstep_jax.methods.base import check_choice
from fewstep_jax.methods.dmd import DistributionMatching
from fewstep_jax.methods.registry import register


# h(r) = r^2 f''(r) up to a constant (the batch-mean normalisation removes it), by f-divergence D_f(p || q).
F_WEIGHTS = {
    'reverse_kl': lambda r: jnp.ones_like(r),       # f = -log r: DMD2.
    'kl': lambda r: r,                              # f = r log r (forward KL).
    'js': lambda r: r / (1 + r),                    # Jensen-Shannon.
    'softened_rkl': lambda r: 1 / (1 + r),          # f = (r + 1) log((r + 1) / (2 r)).
    'neyman_chi2': lambda r: 1 / jnp.maximum(r, 1e-8),
    'squared_hellinger': lambda r: jnp.sqrt(r),
    'jeffreys': lambda r: 1 + r,
    'pearson_chi2': lambda r: r**2,                 # f = (r - 1)^2 (in the paper's family; not in FastGen).
}

# The logit's clip before exp (FastGen's, against overflow).
LOGIT_CLIP = 10.0


@register('f_distill')
class FDistill(DistributionMatching):
  """f-distill: DMD2's matching gradient weighted by h(r) of the GAN head's density ratio at the same x_t."""
  gan_in_generator_loss = True

  @classmethod
  def defaults(cls):
    config = super().defaults()
    config.update(dict(
        divergence='js',          # f: F_WEIGHTS ('js' the ImageNet-64 row, 'kl' the CIFAR-10 row).
        ratio_lower=0.1,          # r's clip before the binned normalisation.
        ratio_upper=20.0,
        ratio_bins=10,            # Linear bins of sigma over [sigma_min, sigma_max] for r's running mean; 0: off.
        ratio_ema=0.0,            # The bins' running-mean rate (0: this batch's mean alone; ImageNet-64: 0.5).
        min_level=0.002,          # The matching levels: indices 2..998 of the 1000-level Karras grid.
        max_level=0.998,
        gan_features='teacher',   # The head reads the frozen teacher's bottleneck.
        gan_weight=1.0,           # The head's own loss alone trains it (teacher features), so only Adam sees it.
        gan_generator_weight=1e-3,  # ImageNet-64: 3e-3.
        student_every=5,
        critic_first=False,
        critic_on_student_steps=False,  # FastGen: the critic and head update on the four steps between.
        critic_weighting='uniform',  # FastGen's fake-score loss: the unweighted x0 MSE for EDM networks.
    ))
    return config

  def __init__(self, config, **build):
    super().__init__(config, **build)
    hp = self.hparams
    check_choice(hp, 'divergence', F_WEIGHTS)
    if hp.gan_weight <= 0:
      raise ValueError('f_distill reads its density ratio from the GAN head, which only method.gan_weight > 0 '
                       f'trains; got method.gan_weight={hp.gan_weight}')
    if not 0 < hp.ratio_lower < hp.ratio_upper:
      raise ValueError(f'method.ratio_lower and ratio_upper must satisfy 0 < lower < upper, got '
                       f'{hp.ratio_lower}, {hp.ratio_upper}')

  def running_statistics(self):
    return {'ratio_bins': jnp.ones((max(int(self.hparams.ratio_bins), 1),), jnp.float32)}

  def density_ratio(self, logits, sigma, bins):
    """(r [B], new bins): r = exp(l) clipped, divided by its running mean in sigma's bin (updated first, with
    this batch's mean in every bin the batch reaches)."""
    hp = self.hparams
    ratio = jnp.clip(jnp.exp(jnp.clip(jax.lax.stop_gradient(logits), -LOGIT_CLIP, LOGIT_CLIP)),
                     hp.ratio_lower, hp.ratio_upper)
    if hp.ratio_bins <= 0:
      return ratio, bins
    width = (hp.sigma_max - hp.sigma_min) / hp.ratio_bins
    index = jnp.clip(jnp.floor((sigma - hp.sigma_min) / width).astype(jnp.int32), 0, hp.ratio_bins - 1)
    count = jnp.zeros_like(bins).at[index].add(1.0)
    total = jnp.zeros_like(bins).at[index].add(ratio)
    updated = hp.ratio_ema * bins + (1 - hp.ratio_ema) * total / (count + 1e-6)
    bins = jnp.where(count > 0, updated, bins)
    return ratio / (bins[index] + 1e-6), bins

  def generator_loss(self, x, y, key, ctx, x_in=None, sigma_in=None):
    del x_in, sigma_in
    hp = self.hparams
    sigma, noise = self.matching_point(key, x)
    x_sg = jax.lax.stop_gradient(x)
    x_t = self.path.noisy(x_sg, noise, sigma)
    p_real = x_sg - self.real_denoiser(ctx.frozen, y)(x_t, sigma)
    p_fake = x_sg - self.denoise(ctx.nets['critic'], x_t, sigma, y)
    # The head at the same point, with gradient into x through x_t for the generator's GAN side.
    logits = self.logits_at(ctx.nets, ctx.frozen, self.path.noisy(x, noise, sigma), sigma, y)
    ratio, bins = self.density_ratio(logits, sigma, ctx.extra['ratio_bins'])
    h = F_WEIGHTS[hp.divergence](ratio)
    h = h / (jnp.mean(h) + 1e-6)
    grad = paths.expand_to(h, p_real) * (p_real - p_fake) / paths.expand_to(per_sample_mean(jnp.abs(p_real)), p_real)
    grad = jnp.nan_to_num(grad)
    matching = 0.5 * jnp.mean(jnp.square(x - jax.lax.stop_gradient(x - grad)))
    gan = jnp.mean(jax.nn.softplus(-logits))
    loss = matching + hp.gan_generator_weight * gan
    return loss, {'matching_loss': matching, 'generator_gan_loss': gan, 'ratio_bins': bins,
                  'mean_ratio': jnp.mean(ratio), 'max_h': jnp.max(h), 'min_h': jnp.min(h)}

"""Diff-Instruct / VSD (Luo et al. 2023; Wang et al. 2023): the DMD family's matching gradient (dmd.py) without
the mean |p_real| normalisation, weighted by w(sigma); roles, critic and schedule: score_distillation.py.

  grad = w(sigma) (p_real - p_fake),   w: DI_WEIGHTINGS (the official weight is 1)
"""
import jax.numpy as jnp

from fewstep_jax import paths
from fewstep_jax.methods.base import check_choice
from fewstep_jax.methods.dmd import DistributionMatching
from fewstep_jax.methods.registry import register


# Diff-Instruct's time weighting of p_real - p_fake: sigma [B] -> w [B].
DI_WEIGHTINGS = {
    'unit': lambda sigma, hp: jnp.ones_like(sigma),
    'snr': lambda sigma, hp: hp.sigma_data**2 / sigma**2,
}


@register('diff_instruct')
class DiffInstruct(DistributionMatching):
  """Diff-Instruct / VSD: the matching gradient without the mean |p_real| normalisation, weighted by w(sigma).

  Followed: pkulwj1994/diff_instruct, training/di_loss.py `DI_EDMLoss.gloss` (log-normal levels, weight 1, the
  gradient D_fake - D_real = p_real - p_fake) and `__call__` (the critic's EDM loss at log-normal levels),
  training/di_training_loop.py (critic first, then the generator, 1:1) and the README's CIFAR-10 command
  (init_sigma 1.0). Deviation: the official calls both denoisers in training mode with one replayed RNG state
  (shared dropout masks); ours are deterministic.
  """

  @classmethod
  def defaults(cls):
    config = super().defaults()
    config.update(dict(
        weighting='unit',          # w(sigma): DI_WEIGHTINGS; the official weight is 1.
        matching_sigmas='lognormal',
        critic_sigmas='lognormal',
        sigma_init=1.0,
        critic_first=True,
    ))
    return config

  def __init__(self, config, **build):
    super().__init__(config, **build)
    check_choice(self.hparams, 'weighting', DI_WEIGHTINGS)

  def matching_gradient(self, p_real, p_fake, sigma):
    weight = DI_WEIGHTINGS[self.hparams.weighting](sigma, self.hparams)
    return paths.expand_to(weight, p_real) * (p_real - p_fake)

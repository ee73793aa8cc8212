"""Diff-Instruct (Luo et al. 2023) on unconditional CIFAR-10 from the unconditional EDM teacher
(runs/cifar10_edm_uncond: configs/cifar10/edm.py with --config.data.conditional=False), 1 NFE: the unnormalised
matching gradient at log-normal levels from sigma_init 1; as the official README's command: Adam lr 1e-5, betas
(0, 0.999), batch 128, 1:1 updates, critic first, EMA half-life 0.5 Mimg.
Settings: `config_base.DISTILLATION_SETUPS['cifar10']` and `DISTILLATION_RECIPES['diff_instruct']`.
  python -m fewstep_jax.main --config=configs/cifar10/diff_instruct.py --workdir=runs/cifar10_diff_instruct \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.teacher=runs/cifar10_edm_uncond
"""
from fewstep_jax.config_base import base_config, distillation_recipe


def get_config():
  config = base_config(method='diff_instruct', network='unet', dataset='tfds')
  distillation_recipe(config, 'cifar10')
  return config

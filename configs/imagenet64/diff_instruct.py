"""Diff-Instruct (Luo et al. 2023) on ImageNet-64 from the class-conditional EDM teacher, 1 NFE: the unnormalised
matching gradient at log-normal levels from sigma_init 1; Adam lr 1e-5, betas (0, 0.999), 1:1 updates (the official
code's CIFAR-10 settings; it publishes no ImageNet-64 run).
Settings: `config_base.DISTILLATION_SETUPS['imagenet64']` and `DISTILLATION_RECIPES['diff_instruct']`.
  python -m fewstep_jax.main --config=configs/imagenet64/diff_instruct.py --workdir=runs/imagenet64_diff_instruct \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.teacher=runs/imagenet64_edm
"""
from fewstep_jax.config_base import base_config, distillation_recipe


def get_config():
  config = base_config(method='diff_instruct', network='unet', dataset='tfds')
  distillation_recipe(config, 'imagenet64')
  return config

"""DMD2 (Yin et al. 2024) on CIFAR-10 from the class-conditional EDM teacher, 1 NFE: the paper reports no CIFAR-10
run, so this is its ImageNet-64 recipe (AdamW lr 2e-6 for both roles, GAN head at 1e-2 / 3e-3, critic every step
and student every 5th, no EMA) on the CIFAR-10 teacher.
Settings: `config_base.DISTILLATION_SETUPS['cifar10']` and `DISTILLATION_RECIPES['dmd2']`.
  python -m fewstep_jax.main --config=configs/cifar10/dmd2.py --workdir=runs/cifar10_dmd2 \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.teacher=runs/cifar10_edm
"""
from fewstep_jax.config_base import base_config, distillation_recipe


def get_config():
  config = base_config(method='dmd2', network='unet', dataset='tfds')
  distillation_recipe(config, 'cifar10')
  return config

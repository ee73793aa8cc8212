"""DMD (Yin et al. 2023) on CIFAR-10 from the class-conditional EDM teacher, 1 NFE: 1:1 updates and the LPIPS
regression loss (weight 0.25) on teacher ODE pairs generated once.
Settings: `config_base.DISTILLATION_SETUPS['cifar10']` and `DISTILLATION_RECIPES['dmd']`.
  python -m fewstep_jax.reflow --teacher=runs/cifar10_edm --out=runs/cifar10_edm_pairs --num=100000 --nfe=35
  python -m fewstep_jax.main --config=configs/cifar10/dmd.py --workdir=runs/cifar10_dmd \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.teacher=runs/cifar10_edm \
      --config.method.lpips_weights=/path/to/lpips_vgg16.npz
"""
from fewstep_jax.config_base import base_config, distillation_recipe


def get_config():
  config = base_config(method='dmd', network='unet', dataset='tfds')
  distillation_recipe(config, 'cifar10')
  return config

"""CD (consistency distillation from the EDM teacher, LPIPS) on CIFAR-10, for accelerators; reference FID (1 / 2 NFE):
3.55 / 2.93. Settings: `config_base.CONSISTENCY_RECIPES[('cd', 'cifar10')]`.

  python -m fewstep_jax.main --config=configs/cifar10/cd.py --workdir=runs/cifar10_cd \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 \
      --config.method.teacher=runs/cifar10_edm --config.method.lpips_weights=/path/to/lpips_vgg16.npz
"""
from fewstep_jax.config_base import base_config, consistency_recipe


def get_config():
  config = base_config(method='cd', network='unet', dataset='tfds')
  consistency_recipe(config, 'cifar10')
  return config

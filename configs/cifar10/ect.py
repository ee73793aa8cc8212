"""ECT (easy consistency tuning of the unconditional EDM teacher) on unconditional CIFAR-10, for accelerators;
reference FID (1 / 2 NFE): 3.60 / 2.11. Settings: `config_base.CONSISTENCY_RECIPES[('ect', 'cifar10')]`.

  python -m fewstep_jax.main --config=configs/cifar10/edm.py --workdir=runs/cifar10_edm_uncond \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.data.conditional=False
  python -m fewstep_jax.main --config=configs/cifar10/ect.py --workdir=runs/cifar10_ect \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 \
      --config.method.init_from=runs/cifar10_edm_uncond
"""
from fewstep_jax.config_base import base_config, consistency_recipe


def get_config():
  config = base_config(method='ect', network='unet', dataset='tfds')
  consistency_recipe(config, 'cifar10')
  return config

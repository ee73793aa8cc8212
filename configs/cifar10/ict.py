"""iCT (improved consistency training, from scratch) on unconditional CIFAR-10, for accelerators; reference FID
(1 / 2 NFE): 2.83 / 2.46. Settings: `config_base.CONSISTENCY_RECIPES[('ict', 'cifar10')]`.

  python -m fewstep_jax.main --config=configs/cifar10/ict.py --workdir=runs/cifar10_ict \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8
"""
from fewstep_jax.config_base import base_config, consistency_recipe


def get_config():
  config = base_config(method='ict', network='unet', dataset='tfds')
  consistency_recipe(config, 'cifar10')
  return config

"""iCT (improved consistency training, from scratch) on ImageNet-64, for accelerators; reference FID (1 / 2 NFE):
4.02 / 3.20 (iCT at this network's size; iCT-deep, twice as deep, 3.25 / 2.77). Settings:
`config_base.CONSISTENCY_RECIPES[('ict', 'imagenet64')]`.

  python -m fewstep_jax.main --config=configs/imagenet64/ict.py --workdir=runs/imagenet64_ict \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8
"""
from fewstep_jax.config_base import base_config, consistency_recipe


def get_config():
  config = base_config(method='ict', network='unet', dataset='tfds')
  consistency_recipe(config, 'imagenet64')
  return config

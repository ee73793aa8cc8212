"""ECT (easy consistency tuning of the EDM teacher) on ImageNet-64, for accelerators; no reference figure in METHODS.md
(the paper's ImageNet-64 runs use EDM2 networks). Settings: `config_base.CONSISTENCY_RECIPES[('ect', 'imagenet64')]`.

  python -m fewstep_jax.main --config=configs/imagenet64/ect.py --workdir=runs/imagenet64_ect \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 \
      --config.method.init_from=runs/imagenet64_edm
"""
from fewstep_jax.config_base import base_config, consistency_recipe


def get_config():
  config = base_config(method='ect', network='unet', dataset='tfds')
  consistency_recipe(config, 'imagenet64')
  return config

"""ECT (easy consistency tuning of the EDM teacher) on ImageNet-64, for accelerators; reference FID (1 / 2 NFE):
2.49 / 1.67 (as sCM's Table 1 cites ECT, with an EDM2 network; this config tunes the codebase's EDM U-Net).
Settings: `config_base.CONSISTENCY_RECIPES[('ect', 'imagenet64')]`.

  python -m fewstep_jax.main --config=configs/imagenet64/ect.py --workdir=runs/imagenet64_ect \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 \
      --config.method.init_from=runs/imagenet64_edm
"""
from fewstep_jax.config_base import base_config, consistency_recipe


def get_config():
  config = base_config(method='ect', network='unet', dataset='tfds')
  consistency_recipe(config, 'imagenet64')
  return config

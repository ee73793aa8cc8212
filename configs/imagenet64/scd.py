"""sCD on ImageNet-64 from the ImageNet-64 EDM teacher (configs/imagenet64/edm.py), converted exactly to
TrigFlow, for accelerators; reference 2.44 / 1.66 FID at 1 / 2 NFE
(EDM2-XL, sCM Table 1; 2.97 / 2.07 at EDM2-S size, Table 8). Settings: `config_base.SCM_RECIPES['imagenet64']`.

  python -m fewstep_jax.main --config=configs/imagenet64/scd.py --workdir=runs/imagenet64_scd \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=32 --config.mesh.fsdp=8 \
      --config.method.teacher=runs/imagenet64_edm
"""
from fewstep_jax.config_base import base_config, scm_recipe


def get_config():
  config = base_config(method='scd', network='unet', dataset='tfds')
  scm_recipe(config, 'imagenet64')
  config.method.teacher = 'runs/imagenet64_edm'
  return config

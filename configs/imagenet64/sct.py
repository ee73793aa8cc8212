"""sCT on ImageNet-64 (class-conditional U-Net with a log-variance head), for accelerators; reference 2.04 / 1.48
FID at 1 / 2 NFE with the paper's EDM2-XL network (sCM Table 1; at EDM2-S size, 280M parameters, Table 8 gives
3.23 / 2.93). Settings: `config_base.SCM_RECIPES['imagenet64']`.

  python -m fewstep_jax.main --config=configs/imagenet64/sct.py --workdir=runs/imagenet64_sct \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=32 --config.mesh.fsdp=8 \
      [--config.method.init_from=RUN]
"""
from fewstep_jax.config_base import base_config, scm_recipe


def get_config():
  config = base_config(method='sct', network='unet', dataset='tfds')
  scm_recipe(config, 'imagenet64')
  return config

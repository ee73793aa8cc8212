"""SIM (Luo et al. 2024) on ImageNet-64 from the class-conditional EDM teacher, 1 NFE (the paper reports
CIFAR-10 only; this is its recipe on the ImageNet-64 teacher).
Settings: `config_base.DISTILLATION_SETUPS['imagenet64']` and `DISTILLATION_RECIPES['sim']`.
  python -m fewstep_jax.main --config=configs/imagenet64/sim.py --workdir=runs/imagenet64_sim \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.teacher=runs/imagenet64_edm
"""
from fewstep_jax.config_base import base_config, distillation_recipe


def get_config():
  config = base_config(method='sim', network='unet', dataset='tfds')
  distillation_recipe(config, 'imagenet64')
  return config

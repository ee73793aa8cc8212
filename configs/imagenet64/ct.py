"""CT (consistency training, LPIPS, CM's curricula) on ImageNet-64, for accelerators; no reference figure in METHODS.md
(the CM paper reports ImageNet-64 CT). Settings: `config_base.CONSISTENCY_RECIPES[('ct', 'imagenet64')]`.

  python -m fewstep_jax.main --config=configs/imagenet64/ct.py --workdir=runs/imagenet64_ct \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 \
      --config.method.lpips_weights=/path/to/lpips_vgg16.npz
"""
from fewstep_jax.config_base import base_config, consistency_recipe


def get_config():
  config = base_config(method='ct', network='unet', dataset='tfds')
  consistency_recipe(config, 'imagenet64')
  return config

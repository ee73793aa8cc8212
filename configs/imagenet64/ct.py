"""CT (consistency training, LPIPS, CM's curricula) on ImageNet-64, for accelerators; reference FID (1 / 2 NFE):
13.0 / 11.1 (CM, Table 2; RAdam lr 8e-6, batch 2048, mu0 0.95, s1 200, EMA 0.999943 from its Table 3).
Settings: `config_base.CONSISTENCY_RECIPES[('ct', 'imagenet64')]`.

  python -m fewstep_jax.main --config=configs/imagenet64/ct.py --workdir=runs/imagenet64_ct \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 \
      --config.method.lpips_weights=/path/to/lpips_vgg16.npz
"""
from fewstep_jax.config_base import base_config, consistency_recipe


def get_config():
  config = base_config(method='ct', network='unet', dataset='tfds')
  consistency_recipe(config, 'imagenet64')
  return config

"""CT (consistency training, LPIPS, CM's curricula) on unconditional CIFAR-10, for accelerators; reference FID
(1 / 2 NFE): 8.70 / 5.83 (CM, Table 1; RAdam lr 4e-4, batch 512, mu0 0.9, s0 2, s1 150 from its Table 3).
Settings: `config_base.CONSISTENCY_RECIPES[('ct', 'cifar10')]`.

  python -m fewstep_jax.main --config=configs/cifar10/ct.py --workdir=runs/cifar10_ct \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 \
      --config.method.lpips_weights=/path/to/lpips_vgg16.npz
"""
from fewstep_jax.config_base import base_config, consistency_recipe


def get_config():
  config = base_config(method='ct', network='unet', dataset='tfds')
  consistency_recipe(config, 'cifar10')
  return config

"""SIM (Luo et al. 2024) on CIFAR-10 from the class-conditional EDM teacher, 1 NFE; reference FID 1.96
(class-conditional; 2.06 unconditional). Pseudo-Huber distance, Adam lr 1e-5, betas (0, 0.999), 1:1 updates.
Settings: `config_base.DISTILLATION_SETUPS['cifar10']` and `DISTILLATION_RECIPES['sim']`.
  python -m fewstep_jax.main --config=configs/cifar10/sim.py --workdir=runs/cifar10_sim \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.teacher=runs/cifar10_edm
"""
from fewstep_jax.config_base import base_config, distillation_recipe


def get_config():
  config = base_config(method='sim', network='unet', dataset='tfds')
  distillation_recipe(config, 'cifar10')
  return config

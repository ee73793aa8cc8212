"""SiD (Zhou et al. 2024) on ImageNet-64 from the class-conditional EDM teacher, 1 NFE; reference FID 1.524.
alpha 1.2, sigma_init 2.5, t_max 0.8, Adam betas (0, 0.999), 1:1 updates, critic first; as the official
run_sid.sh ImageNet-64 run: lr 4e-6 for both roles, batch 8192, 1000 Mimg (122k steps), EMA half-life 2 Mimg.
Settings: `config_base.DISTILLATION_SETUPS['imagenet64']` and `DISTILLATION_RECIPES['sid']`.
  python -m fewstep_jax.main --config=configs/imagenet64/sid.py --workdir=runs/imagenet64_sid \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.teacher=runs/imagenet64_edm
"""
from fewstep_jax.config_base import base_config, distillation_recipe


def get_config():
  config = base_config(method='sid', network='unet', dataset='tfds')
  distillation_recipe(config, 'imagenet64')
  return config

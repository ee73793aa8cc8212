"""DMD (Yin et al. 2023) on ImageNet-64 from the class-conditional EDM teacher, 1 NFE; reference FID 2.62. 1:1
updates and the LPIPS regression loss (weight 0.25) on teacher ODE pairs generated once.
Settings: `config_base.DISTILLATION_SETUPS['imagenet64']` and `DISTILLATION_RECIPES['dmd']`.
  python -m fewstep_jax.reflow --teacher=runs/imagenet64_edm --out=runs/imagenet64_edm_pairs --num=25000 --nfe=79
  python -m fewstep_jax.main --config=configs/imagenet64/dmd.py --workdir=runs/imagenet64_dmd \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.teacher=runs/imagenet64_edm \
      --config.method.lpips_weights=/path/to/lpips_vgg16.npz
"""
from fewstep_jax.config_base import base_config, distillation_recipe


def get_config():
  config = base_config(method='dmd', network='unet', dataset='tfds')
  distillation_recipe(config, 'imagenet64')
  return config

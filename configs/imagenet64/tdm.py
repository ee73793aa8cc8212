"""TDM (Luo et al. 2025) on ImageNet-64 from the class-conditional EDM teacher, 4 NFE: a 4-stage deterministic
student, its learning rate a fifth of the critic's. The paper distils text-to-image models only; the rest of this
recipe is this codebase's.
Settings: `config_base.DISTILLATION_SETUPS['imagenet64']` and `DISTILLATION_RECIPES['tdm']`.
  python -m fewstep_jax.main --config=configs/imagenet64/tdm.py --workdir=runs/imagenet64_tdm \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.teacher=runs/imagenet64_edm
"""
from fewstep_jax.config_base import base_config, distillation_recipe


def get_config():
  config = base_config(method='tdm', network='unet', dataset='tfds')
  distillation_recipe(config, 'imagenet64')
  config.eval.nfe = (1, 2, 4)
  return config

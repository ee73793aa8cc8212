"""CD (consistency distillation from the EDM teacher, LPIPS) on ImageNet-64, for accelerators; reference FID
(1 / 2 NFE): 6.20 / 4.70 (CM, Table 2; RAdam lr 8e-6, batch 2048, mu 0.95, N = 40, EMA 0.999943 from its Table 3;
the student starts from the teacher). Settings: `config_base.CONSISTENCY_RECIPES[('cd', 'imagenet64')]`.

  python -m fewstep_jax.main --config=configs/imagenet64/cd.py --workdir=runs/imagenet64_cd \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 \
      --config.method.teacher=runs/imagenet64_edm --config.method.lpips_weights=/path/to/lpips_vgg16.npz
"""
from fewstep_jax.config_base import base_config, consistency_recipe


def get_config():
  config = base_config(method='cd', network='unet', dataset='tfds')
  consistency_recipe(config, 'imagenet64')
  return config

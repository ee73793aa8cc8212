"""CD (consistency distillation from the unconditional EDM teacher, LPIPS) on unconditional CIFAR-10, for
accelerators; reference FID (1 / 2 NFE): 3.55 / 2.93 (CM, Table 1). As CM's Table 3 and appendix C: the online
network as its own target (mu = 0, `target_ema='none'`), N = 18, RAdam lr 4e-4, batch 512, EMA 0.9999, 800k steps,
the student starting from the teacher's weights. Settings: `config_base.CONSISTENCY_RECIPES[('cd', 'cifar10')]`.

  python -m fewstep_jax.main --config=configs/cifar10/edm.py --workdir=runs/cifar10_edm_uncond \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.data.conditional=False
  python -m fewstep_jax.main --config=configs/cifar10/cd.py --workdir=runs/cifar10_cd \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 \
      --config.method.lpips_weights=/path/to/lpips_vgg16.npz
"""
from fewstep_jax.config_base import base_config, consistency_recipe


def get_config():
  config = base_config(method='cd', network='unet', dataset='tfds')
  consistency_recipe(config, 'cifar10')
  return config

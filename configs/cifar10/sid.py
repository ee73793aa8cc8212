"""SiD (Zhou et al. 2024) on CIFAR-10 from the class-conditional EDM teacher, 1 NFE; reference FID 1.710
(class-conditional; 1.923 unconditional: --config.data.conditional=False --config.train.num_steps=1953125 with the
unconditional teacher runs/cifar10_edm_uncond, 500 Mimg in the official run_sid.sh).
alpha 1.2, sigma_init 2.5, t_max 0.8, Adam lr 1e-5, betas (0, 0.999), batch 256, 1:1 updates, critic first,
800 Mimg (3.125M steps), EMA half-life 0.5 Mimg.
Settings: `config_base.DISTILLATION_SETUPS['cifar10']` and `DISTILLATION_RECIPES['sid']`.
  python -m fewstep_jax.main --config=configs/cifar10/sid.py --workdir=runs/cifar10_sid \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.teacher=runs/cifar10_edm
"""
from fewstep_jax.config_base import base_config, distillation_recipe


def get_config():
  config = base_config(method='sid', network='unet', dataset='tfds')
  distillation_recipe(config, 'cifar10')
  return config

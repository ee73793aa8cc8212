"""Class-conditional CD (consistency distillation, Song et al. 2023) on the 8x8 digits from the README's
flow-matching teacher with guidance 1.5 baked in (one Heun step of its ODE on EDM sigma per pair, four teacher
calls), 18-point grid, EMA target 0.95, squared L2; 1, 2 and 4 NFE.

  python -m fewstep_jax.main --config=configs/digits/cd.py --workdir=runs/digits_cd \
      --config.method.teacher=runs/quickstart
"""
from fewstep_jax.config_base import base_config, digits_recipe


def get_config():
  config = base_config(method='cd', network='unet', dataset='digits')
  digits_recipe(config, two_times=False)
  config.network.time_scale = 250.0  # c_noise = ln(sigma) / 4 spans about [-1.6, 1.1].
  config.method.teacher = 'runs/quickstart'
  config.method.teacher_guidance = 1.5
  return config

"""Class-conditional sCD on the 8x8 digits, distilled from the README's flow-matching teacher with guidance 1.5
baked in (two teacher calls per sample in training, one student call per step in sampling); 1, 2 and 4 NFE.

  python -m fewstep_jax.main --config=configs/digits/scd.py --workdir=runs/digits_scd \
      --config.method.teacher=runs/quickstart
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits/common.py


def get_config():
  config = base_config(method='scd', network='unet', dataset='digits')
  common.few_step(config, two_times=False)
  config.network.logvar_head = True
  config.network.time_scale = 1.0  # c_noise(tau) = tau, unscaled (see configs/toy/sct.py).
  config.method.teacher = 'runs/quickstart'
  config.method.teacher_guidance = 1.5
  config.method.tangent_warmup_steps = 500
  config.method.label_dropout = 0.0
  return config

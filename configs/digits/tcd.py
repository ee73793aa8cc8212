"""Class-conditional TCD (trajectory consistency distillation, Zheng et al. 2024) on the 8x8 digits from the digits
EDM run (guidance 1.5 baked in), starting from its weights: CD with both outputs moved by DDIM to a common random
s <= sigma_n; 18-point grid, EMA target 0.95, squared L2; sampled with gamma 0.3 at 1, 2 and 4 NFE.

  python -m fewstep_jax.main --config=configs/digits/edm.py --workdir=runs/digits_edm
  python -m fewstep_jax.main --config=configs/digits/tcd.py --workdir=runs/digits_tcd
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits/common.py


def get_config():
  config = base_config(method='tcd', network='unet', dataset='digits')
  common.few_step(config, two_times=False)
  config.network.time_scale = 250.0  # The EDM run's network: c_noise = ln(sigma) / 4.
  config.method.update(teacher='runs/digits_edm', init_from='runs/digits_edm', teacher_guidance=1.5)
  return config

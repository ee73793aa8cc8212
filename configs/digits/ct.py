"""Class-conditional CT (consistency training, Song et al. 2023) on the 8x8 digits, from scratch: squared L2
(LPIPS needs its weights file), N(k) from 2 to 151 points over the run, EMA target at a fixed rate 0.95 (CM's
adaptive mu(k) is made for 800k steps; see configs/toy/ct.py); 1, 2 and 4 NFE without guidance.

  python -m fewstep_jax.main --config=configs/digits/ct.py --workdir=runs/digits_ct
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits/common.py


def get_config():
  config = base_config(method='ct', network='unet', dataset='digits')
  common.few_step(config, two_times=False)
  config.network.time_scale = 250.0  # c_noise = ln(sigma) / 4 spans about [-1.6, 1.1].
  config.method.target_ema = 'fixed'
  config.method.mu0 = 0.95
  return config

"""Class-conditional iCT (improved consistency training, Song & Dhariwal 2023) on the 8x8 digits, from scratch:
no EMA target, pseudo-Huber with c = 0.00054 sqrt(64), 1 / (sigma_{n+1} - sigma_n) weighting, the log-normal index
distribution and the doubling curriculum 11 -> 1281; 1, 2 and 4 NFE without guidance.

  python -m fewstep_jax.main --config=configs/digits/ict.py --workdir=runs/digits_ict
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits/common.py


def get_config():
  config = base_config(method='ict', network='unet', dataset='digits')
  common.few_step(config, two_times=False)
  config.network.time_scale = 250.0  # c_noise = ln(sigma) / 4 spans about [-1.6, 1.1].
  return config

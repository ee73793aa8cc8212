"""iCT (improved consistency training, Song & Dhariwal 2023) on 2-D toy data, from scratch: no EMA target,
pseudo-Huber with c = 0.00054 sqrt(2), 1 / (sigma_{n+1} - sigma_n) weighting, the log-normal index distribution
and the doubling curriculum 11 -> 1281 in eight equal stages; 1, 2 and 4 NFE.

  python -m fewstep_jax.main --config=configs/toy/ict.py --workdir=runs/toy_ict
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='ict', network='mlp', dataset='toy')
  common.few_step(config, two_times=False)
  config.network.time_scale = 250.0  # c_noise = ln(sigma) / 4 spans about [-1.6, 1.1].
  return config

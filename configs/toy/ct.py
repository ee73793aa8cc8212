"""CT (consistency training, Song et al. 2023) on 2-D toy data, from scratch: squared L2, the N(k) curriculum
from 2 to 151 grid points over the run, and an EMA target at a fixed rate 0.95; 1, 2 and 4 NFE.

CM's adaptive rate mu(k) = 0.9^(2 / N(k)) (`target_ema='cm'`) reaches 0.9987 and is made for 800k steps: in
6000 steps the target lags too far behind to carry consistency up to sigma_max (1-NFE sliced W2 0.74, against
0.0099 with the fixed 0.95).

  python -m fewstep_jax.main --config=configs/toy/ct.py --workdir=runs/toy_ct
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='ct', network='mlp', dataset='toy')
  common.few_step(config, two_times=False)
  config.network.time_scale = 250.0  # c_noise = ln(sigma) / 4 spans about [-1.6, 1.1].
  config.method.target_ema = 'fixed'
  config.method.mu0 = 0.95
  return config

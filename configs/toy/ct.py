"""CT (consistency training, Song et al. 2023) on 2-D toy data, from scratch: squared L2, the EMA target with
CM's adaptive rate mu(k) and the N(k) curriculum from 2 to 151 grid points over the run; 1, 2 and 4 NFE.

  python -m fewstep_jax.main --config=configs/toy/ct.py --workdir=runs/toy_ct
"""
from fewstep_jax.config_base import base_config, toy_recipe


def get_config():
  config = base_config(method='ct', network='mlp', dataset='toy')
  toy_recipe(config, two_times=False)
  config.network.time_scale = 250.0  # c_noise = ln(sigma) / 4 spans about [-1.6, 1.1].
  return config

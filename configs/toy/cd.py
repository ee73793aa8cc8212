"""CD (consistency distillation, Song et al. 2023) on 2-D toy data from the toy flow-matching teacher (one Heun
step of its ODE, converted exactly to EDM sigma, per pair), 18-point grid, EMA target 0.95, squared L2;
1, 2 and 4 NFE.

  python -m fewstep_jax.main --config=configs/toy/flow_matching.py --workdir=runs/toy_flow_matching
  python -m fewstep_jax.main --config=configs/toy/cd.py --workdir=runs/toy_cd
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='cd', network='mlp', dataset='toy')
  common.few_step(config, two_times=False)
  config.network.time_scale = 250.0  # c_noise = ln(sigma) / 4 spans about [-1.6, 1.1].
  config.method.teacher = 'runs/toy_flow_matching'
  return config

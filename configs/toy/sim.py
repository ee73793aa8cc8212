"""SIM (Luo et al. 2024) on the 2-D toy data (8 gaussians), distilling the toy EDM teacher: pseudo-Huber c = 0.01 on the
score difference, generator from sigma_init 2.5, 1:1 updates.
Shared settings: configs/toy/common.py.
Against the other methods: README, "Method comparison" (experiments/compare.py).
  python -m fewstep_jax.main --config=configs/toy/edm.py --workdir=runs/toy_edm
  python -m fewstep_jax.main --config=configs/toy/sim.py --workdir=runs/toy_sim
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='sim', network='mlp', dataset='toy')
  common.distillation(config)
  # In 2-D the score difference is small: a smaller c makes d'(y) a unit direction at more levels (sliced W2 at
  # 1 NFE 0.045 with c = 0.01 against 0.12 with c = 1).
  config.method.huber_c = 0.01
  return config

"""SiD (Zhou et al. 2024) on the 2-D toy data (8 gaussians), distilling the toy EDM teacher: alpha 1.2, generator from
sigma_init 2.5, 1:1 updates, critic first.
Shared settings: configs/toy/common.py.
Against the other methods: README, "Method comparison" (experiments/compare.py).
  python -m fewstep_jax.main --config=configs/toy/edm.py --workdir=runs/toy_edm
  python -m fewstep_jax.main --config=configs/toy/sid.py --workdir=runs/toy_sid
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='sid', network='mlp', dataset='toy')
  common.distillation(config)
  return config

"""DMD2 (Yin et al. 2024) on the 2-D toy data (8 gaussians), distilling the toy EDM teacher: normalised matching
gradient, critic every step and student every 5th.
Shared settings: configs/toy/common.py.
Against the other methods: README, "Method comparison" (experiments/compare.py).
  python -m fewstep_jax.main --config=configs/toy/edm.py --workdir=runs/toy_edm
  python -m fewstep_jax.main --config=configs/toy/dmd2.py --workdir=runs/toy_dmd2
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='dmd2', network='mlp', dataset='toy')
  common.distillation(config)
  # Student updates every 5th step: three times the steps and lr of the 1:1 methods give it 2400 updates.
  config.train.num_steps = 12000
  config.optim.lr = 3e-4
  return config

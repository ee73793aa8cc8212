"""DMD (Yin et al. 2023) on the 2-D toy data (8 gaussians), distilling the toy EDM teacher: 1:1 updates plus the
regression loss (weight 0.25, squared L2) on the teacher's ODE pairs.
Shared settings: configs/toy/common.py.
Against the other methods: README, "Method comparison" (experiments/compare.py).
  python -m fewstep_jax.main --config=configs/toy/edm.py --workdir=runs/toy_edm
  python -m fewstep_jax.tools.generate_pairs --teacher=runs/toy_edm --out=runs/toy_edm_pairs --num=4096 --nfe=35
  python -m fewstep_jax.main --config=configs/toy/dmd.py --workdir=runs/toy_dmd
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='dmd', network='mlp', dataset='toy')
  common.distillation(config)
  config.method.regression_pairs = 'runs/toy_edm_pairs'
  return config

"""DMD (Yin et al. 2023) on the 2-D toy data (8 gaussians), distilling the toy EDM teacher: 1:1 updates plus the
regression loss (weight 0.25, squared L2) on the teacher's ODE pairs.
Settings: `config_base.DISTILLATION_SETUPS['toy']`.
Measured here (4000 steps, 4 minutes on 2 CPU cores): sliced W2 0.0060 at 1 NFE (the teacher 0.62 at 1 NFE and
0.0066 at 50, floor 0.0022).
  python -m fewstep_jax.main --config=configs/toy/edm.py --workdir=runs/toy_edm
  python -m fewstep_jax.reflow --teacher=runs/toy_edm --out=runs/toy_edm_pairs --num=4096 --nfe=35
  python -m fewstep_jax.main --config=configs/toy/dmd.py --workdir=runs/toy_dmd
"""
from fewstep_jax.config_base import base_config, distillation_recipe


def get_config():
  config = base_config(method='dmd', network='mlp', dataset='toy')
  distillation_recipe(config, 'toy')
  config.method.regression_pairs = 'runs/toy_edm_pairs'
  return config

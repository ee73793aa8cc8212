"""DMD2 (Yin et al. 2024) on the 2-D toy data (8 gaussians), distilling the toy EDM teacher: normalised matching
gradient, critic every step and student every 5th.
Settings: `config_base.DISTILLATION_SETUPS['toy']`.
Measured here (12000 steps, 2 minutes on 2 CPU cores): sliced W2 0.0081 at 1 NFE (the teacher 0.62 at 1 NFE and
0.0066 at 50, floor 0.0022).
  python -m fewstep_jax.main --config=configs/toy/edm.py --workdir=runs/toy_edm
  python -m fewstep_jax.main --config=configs/toy/dmd2.py --workdir=runs/toy_dmd2
"""
from fewstep_jax.config_base import base_config, distillation_recipe


def get_config():
  config = base_config(method='dmd2', network='mlp', dataset='toy')
  distillation_recipe(config, 'toy')
  # Student updates every 5th step: three times the steps and lr of the 1:1 methods give it 2400 updates.
  config.train.num_steps = 12000
  config.optim.lr = 3e-4
  return config

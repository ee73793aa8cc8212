"""TDM (Luo et al. 2025) on the 2-D toy data (8 gaussians), distilling the toy EDM teacher: a 4-stage deterministic
student (sigma 80, 10, 2, 0.5), the student's lr a fifth of the critic's.
Shared settings: configs/toy/common.py.
Against the other methods: README, "Method comparison" (experiments/compare.py).
  python -m fewstep_jax.main --config=configs/toy/edm.py --workdir=runs/toy_edm
  python -m fewstep_jax.main --config=configs/toy/tdm.py --workdir=runs/toy_tdm
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='tdm', network='mlp', dataset='toy')
  common.distillation(config)
  config.method.critic_optim.lr = 5 * config.optim.lr
  config.eval.nfe = (1, 2, 4)
  return config

"""TDM (Luo et al. 2025) on the 8x8 digits (class-conditional, teacher guidance 1.5 distilled in), distilling the digits
EDM teacher: a 4-stage deterministic student (sigma 80, 10, 2, 0.5), the student's lr a fifth of the critic's.
Shared settings: configs/digits/common.py.
Against the other methods: README, "Method comparison" (experiments/compare.py).
  python -m fewstep_jax.main --config=configs/digits/edm.py --workdir=runs/digits_edm
  python -m fewstep_jax.main --config=configs/digits/tdm.py --workdir=runs/digits_tdm
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits/common.py


def get_config():
  config = base_config(method='tdm', network='unet', dataset='digits')
  common.distillation(config)
  config.method.critic_optim.lr = 5 * config.optim.lr
  config.eval.nfe = (1, 2, 4)
  return config

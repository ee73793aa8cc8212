"""Diff-Instruct (Luo et al. 2023) on the 2-D toy data (8 gaussians), distilling the toy EDM teacher: the unnormalised
matching gradient at log-normal levels, generator from sigma_init 1, 1:1 updates, critic first (the official code's).
Shared settings: configs/toy/common.py, but for an EMA of 0.99: the unnormalised gradient keeps the student moving to
the end, and an EMA of 0.999 averages weights from too far back (the comparison's 3000-step run: sliced W2 0.17 and
half of the modes, against 0.0094 for the raw parameters and for an EMA of 0.99).
Against the other methods: README, "Method comparison" (experiments/compare.py).
  python -m fewstep_jax.main --config=configs/toy/edm.py --workdir=runs/toy_edm
  python -m fewstep_jax.main --config=configs/toy/diff_instruct.py --workdir=runs/toy_diff_instruct
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='diff_instruct', network='mlp', dataset='toy')
  common.distillation(config)
  config.optim.ema_rates = (0.99,)
  config.eval.params = 'ema_0.99'
  return config

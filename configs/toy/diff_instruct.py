"""Diff-Instruct (Luo et al. 2023) on the 2-D toy data (8 gaussians), distilling the toy EDM teacher: the unnormalised
matching gradient at log-normal levels, generator from sigma_init 1, 1:1 updates, critic first (the official code's).
Shared settings: configs/toy/common.py.
Against the other methods at one budget: README, "Method comparison" (experiments/compare.py); at this file's own
step count: docs/measured.md.
  python -m fewstep_jax.main --config=configs/toy/edm.py --workdir=runs/toy_edm
  python -m fewstep_jax.main --config=configs/toy/diff_instruct.py --workdir=runs/toy_diff_instruct
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='diff_instruct', network='mlp', dataset='toy')
  common.distillation(config)
  return config

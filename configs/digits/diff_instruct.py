"""Diff-Instruct (Luo et al. 2023) on the 8x8 digits (class-conditional, teacher guidance 1.5 distilled in), distilling
the digits EDM teacher: the unnormalised matching gradient at log-normal levels, generator from sigma_init 1, 1:1
updates, critic first (the official code's).
Shared settings: configs/digits/common.py.
Against the other methods: README, "Method comparison" (experiments/compare.py).
  python -m fewstep_jax.main --config=configs/digits/edm.py --workdir=runs/digits_edm
  python -m fewstep_jax.main --config=configs/digits/diff_instruct.py --workdir=runs/digits_diff_instruct
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits/common.py


def get_config():
  config = base_config(method='diff_instruct', network='unet', dataset='digits')
  common.distillation(config)
  return config

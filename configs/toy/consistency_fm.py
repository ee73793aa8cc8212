"""Consistency flow matching (two segments) on 2-D toy data (8 gaussians by default): one- and few-step sampling from scratch.

  python -m fewstep_jax.main --config=configs/toy/consistency_fm.py --workdir=runs/toy_consistency_fm
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='consistency_fm', network='mlp', dataset='toy')
  common.few_step(config, two_times=False)
  return config

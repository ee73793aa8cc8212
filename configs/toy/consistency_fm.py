"""Consistency flow matching (two segments) on 2-D toy data (8 gaussians by default): one- and few-step sampling from scratch.

  python -m fewstep_jax.main --config=configs/toy/consistency_fm.py --workdir=runs/toy_consistency_fm
"""
from fewstep_jax.config_base import base_config, toy_recipe


def get_config():
  config = base_config(method='consistency_fm', network='mlp', dataset='toy')
  toy_recipe(config, two_times=False)
  return config

"""Diff-Instruct (Luo et al. 2023) on the 2-D toy data (8 gaussians), distilling the toy EDM teacher: the unnormalised
matching gradient, 1:1 updates.
Settings: `config_base.DISTILLATION_SETUPS['toy']`.
FIGURES
  python -m fewstep_jax.main --config=configs/toy/edm.py --workdir=runs/toy_edm
  python -m fewstep_jax.main --config=configs/toy/diff_instruct.py --workdir=runs/toy_diff_instruct
"""
from fewstep_jax.config_base import base_config, distillation_recipe


def get_config():
  config = base_config(method='diff_instruct', network='mlp', dataset='toy')
  distillation_recipe(config, 'toy')
  return config

"""Shortcut models on 2-D toy data (8 gaussians by default): one- and few-step sampling from scratch.

  python -m fewstep_jax.main --config=configs/toy/shortcut.py --workdir=runs/toy_shortcut
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='shortcut', network='mlp', dataset='toy')
  common.few_step(config, two_times=True)
  # Fewer levels and a larger bootstrap share than the reference (M = 128, 1/8) so that every level gets
  # enough samples in a short run.
  config.method.base_steps = 32
  config.method.bootstrap_fraction = 0.25
  # Bootstrap targets from the live parameters: each level learns from the one below it, and an EMA of
  # 0.999 (the reference's, over 800k steps) lags ~1000 steps per level, longer than this whole run.
  config.method.target_ema = 0.0
  return config

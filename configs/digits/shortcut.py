"""Class-conditional shortcut model on the 8x8 digits from scratch, with CFG 1.5 in the finest bootstrap level,
so that sampling costs one network call a step.

  python -m fewstep_jax.main --config=configs/digits/shortcut.py --workdir=runs/digits_shortcut
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits/common.py


def get_config():
  config = base_config(method='shortcut', network='unet', dataset='digits')
  common.few_step(config, two_times=True)
  # Fewer levels and a larger bootstrap share than the reference (M = 128, 1/8) so that every level gets
  # enough samples in a short run.
  config.method.base_steps = 32
  config.method.bootstrap_fraction = 0.25
  # Bootstrap targets from the live parameters: each level learns from the one below it, and an EMA of
  # 0.999 (the reference's, over 800k steps) lags ~1000 steps per level, longer than this whole run.
  config.method.target_ema = 0.0
  config.method.bootstrap_guidance = 1.5
  return config

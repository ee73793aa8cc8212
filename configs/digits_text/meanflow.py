"""MeanFlow (Geng et al. 2025) from scratch on the captioned digits, text CFG folded into training (omega 1, kappa
0.5) so that sampling costs one call a step: the tiny SD U-Net with r through its time embedding's cond_proj.

  python -m fewstep_jax.main --config=configs/digits_text/meanflow.py --workdir=runs/digits_text_meanflow
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits_text/common.py


def get_config():
  config = base_config(method='meanflow', network='sd_unet', dataset='digits_text')
  # Times enter the embedding unscaled, as the digits' MeanFlow (a large scale makes d/dt dominate the target).
  common.network(config, time_scale=1.0, two_times=True)
  common.training(config)
  config.method.update(omega=1.0, kappa=0.5)
  config.eval.nfe = (1, 2, 4)
  return config

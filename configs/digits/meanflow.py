"""Class-conditional MeanFlow on the 8x8 digits, with classifier-free guidance folded into training
(omega = 1, kappa = 0.5, the reference's DiT-B/4 setting) so that sampling costs one network call a step.

  python -m fewstep_jax.main --config=configs/digits/meanflow.py --workdir=runs/digits_meanflow
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits/common.py


def get_config():
  config = base_config(method='meanflow', network='unet', dataset='digits')
  common.few_step(config, two_times=True)
  # Times enter the embedding unscaled (as in the reference). At the default scale of 1000 the network's
  # d/dt is so large that the tangent term of the target dominates, and on the digits the error grows.
  config.network.time_scale = 1.0
  config.method.omega = 1.0
  config.method.kappa = 0.5
  return config

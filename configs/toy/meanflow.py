"""MeanFlow on 2-D toy data (8 gaussians by default): one- and few-step sampling from scratch.

  python -m fewstep_jax.main --config=configs/toy/meanflow.py --workdir=runs/toy_meanflow
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='meanflow', network='mlp', dataset='toy')
  common.few_step(config, two_times=True)
  # Times enter the embedding unscaled (as in the reference). At the default scale of 1000 the network's
  # d/dt is so large that the tangent term of the target dominates, and on the digits the error grows.
  config.network.time_scale = 1.0
  return config

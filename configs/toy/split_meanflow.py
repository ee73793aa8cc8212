"""SplitMeanFlow on 2-D toy data (8 gaussians by default): one- and few-step sampling from scratch, no JVP.

  python -m fewstep_jax.main --config=configs/toy/split_meanflow.py --workdir=runs/toy_split_meanflow

To distill a trained flow-matching run instead, add --config.method.teacher=runs/toy_flow_matching (the student
network must then match the data, not the teacher).
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='split_meanflow', network='mlp', dataset='toy')
  common.few_step(config, two_times=True)
  config.network.time_scale = 1.0  # Times unscaled, as for MeanFlow.
  return config

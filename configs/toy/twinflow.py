"""TwinFlow on 2-D toy data (8 gaussians by default): one network, its negated-time branch the fake flow of its
own one-step samples; the MNIST tutorial's five terms on every batch. Its figures against the other methods: README, "Method comparison".

  python -m fewstep_jax.main --config=configs/toy/twinflow.py --workdir=runs/toy_twinflow
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='twinflow', network='mlp', dataset='toy')
  common.few_step(config, two_times=True)
  # Raw times, as the reference's MNIST network: the RCGM residual divides a difference in t by delta.
  config.network.time_scale = 1.0
  config.method.target_ema = 0.99
  config.optim.ema_rates = (0.99, 0.999)
  return config

"""TwinFlow on 2-D toy data (8 gaussians by default): one network, its negated-time branch the fake flow of its
own one-step samples; the MNIST tutorial's five terms on every batch.

  python -m fewstep_jax.main --config=configs/toy/twinflow.py --workdir=runs/toy_twinflow
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='twinflow', network='mlp', dataset='toy')
  config.data.toy = '8gaussians'
  config.network.hidden = 256
  config.network.depth = 3
  config.network.two_times = True
  # Raw times, as the reference's MNIST network: the RCGM residual divides a difference in t by delta.
  config.network.time_scale = 1.0
  config.method.target_ema = 0.99
  config.train.num_steps = 6000
  config.train.batch_size = 256
  config.train.log_every = 200
  config.train.checkpoint_every = 2000
  config.optim.lr = 1e-3
  config.optim.schedule = 'cosine'
  config.optim.warmup_steps = 200
  config.optim.ema_rates = (0.99, 0.999)
  config.eval.params = 'ema_0.999'
  config.eval.nfe = (1, 2, 4)
  config.eval.num_samples = 2000
  return config

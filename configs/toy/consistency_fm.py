"""Consistency flow matching (two segments) on 2-D toy data (8 gaussians by default): one- and few-step sampling from scratch.

  python -m fewstep_jax.main --config=configs/toy/consistency_fm.py --workdir=runs/toy_consistency_fm
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='consistency_fm', network='mlp', dataset='toy')
  config.data.toy = '8gaussians'
  config.network.hidden = 256
  config.network.depth = 3
  config.train.num_steps = 6000
  config.train.batch_size = 256
  config.train.log_every = 200
  config.train.checkpoint_every = 2000
  config.optim.lr = 1e-3
  config.optim.schedule = 'cosine'
  config.optim.warmup_steps = 200
  config.optim.ema_rates = (0.999,)
  config.eval.nfe = (1, 2, 4)
  config.eval.num_samples = 2000
  return config

"""Class-conditional consistency flow matching (two segments) on the 8x8 digits, sampled without guidance so that
1 NFE is one network call.

  python -m fewstep_jax.main --config=configs/digits/consistency_fm.py --workdir=runs/digits_consistency_fm
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='consistency_fm', network='unet', dataset='digits')
  config.network.channels = 24
  config.network.channel_mult = (1, 2)
  config.network.num_res_blocks = 1
  config.network.attn_resolutions = (4,)
  config.train.num_steps = 2000
  config.train.batch_size = 128
  config.train.log_every = 100
  config.train.checkpoint_every = 1000
  config.optim.lr = 2e-3
  config.optim.schedule = 'cosine'
  config.optim.warmup_steps = 200
  config.optim.grad_clip = 1.0
  config.optim.ema_rates = (0.999,)
  config.eval.nfe = (1, 2, 4)
  config.eval.num_samples = 1000
  return config

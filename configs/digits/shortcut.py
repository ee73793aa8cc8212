"""Class-conditional shortcut model on the 8x8 digits from scratch, with CFG 1.5 in the finest bootstrap level,
so that sampling costs one network call a step.

  python -m fewstep_jax.main --config=configs/digits/shortcut.py --workdir=runs/digits_shortcut
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='shortcut', network='unet', dataset='digits')
  config.network.channels = 24
  config.network.channel_mult = (1, 2)
  config.network.num_res_blocks = 1
  config.network.attn_resolutions = (4,)
  config.network.two_times = True
  # Fewer levels and a larger bootstrap share than the reference (M = 128, 1/8) so that every level gets
  # enough samples in a short run.
  config.method.base_steps = 32
  config.method.bootstrap_fraction = 0.25
  config.method.bootstrap_guidance = 1.5
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

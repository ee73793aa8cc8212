"""Class-conditional TwinFlow on the 8x8 digits with the production batch split (end-to-end, near-diagonal,
any-interval and adversarial quarters; one network call per row) and the tutorial's CFG-enhanced target
(ratio 0.5), so that sampling costs one call a step.

  python -m fewstep_jax.main --config=configs/digits/twinflow.py --workdir=runs/digits_twinflow
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='twinflow', network='unet', dataset='digits')
  config.network.channels = 24
  config.network.channel_mult = (1, 2)
  config.network.num_res_blocks = 1
  config.network.attn_resolutions = (4,)
  config.network.two_times = True
  config.network.time_scale = 1.0
  config.method.production_split = True
  config.method.cfg_ratio = 0.5
  config.method.target_ema = 0.99
  config.train.num_steps = 2000
  config.train.batch_size = 128
  config.train.log_every = 100
  config.train.checkpoint_every = 1000
  config.optim.lr = 2e-3
  config.optim.schedule = 'cosine'
  config.optim.warmup_steps = 200
  config.optim.grad_clip = 1.0
  config.optim.ema_rates = (0.99, 0.999)
  config.eval.params = 'ema_0.999'
  config.eval.nfe = (1, 2, 4)
  config.eval.num_samples = 1000
  return config

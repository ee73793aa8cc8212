"""Class-conditional EDM denoiser teacher on the 8x8 digits: Heun on the Karras grid with classifier-free
guidance 1.5, where 70 NFE = 35 guided denoiser evaluations (two network calls each) = 18 Heun steps.

  python -m fewstep_jax.main --config=configs/digits/edm.py --workdir=runs/digits_edm
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='edm', network='unet', dataset='digits')
  config.network.channels = 24
  config.network.channel_mult = (1, 2)
  config.network.num_res_blocks = 1
  config.network.attn_resolutions = (4,)
  config.network.time_scale = 250.0  # c_noise = ln(sigma) / 4 spans about [-1.6, 1.1].
  config.method.label_dropout = 0.1
  config.method.guidance = 1.5
  config.train.num_steps = 2000
  config.train.batch_size = 128
  config.train.log_every = 100
  config.train.checkpoint_every = 1000
  config.optim.lr = 2e-3
  config.optim.schedule = 'cosine'
  config.optim.warmup_steps = 200
  config.optim.grad_clip = 1.0
  config.optim.ema_rates = (0.999,)
  config.eval.params = 'ema_0.999'
  config.eval.nfe = (2, 14, 30, 70)
  config.eval.num_samples = 1000
  return config

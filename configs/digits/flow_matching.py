"""Class-conditional flow-matching teacher on the 8x8 scikit-learn digits (the README quick start).

U-Net velocity field, logit-normal times, 10% label dropout; Heun sampling with classifier-free guidance 1.5
(two network calls per drift evaluation: NFE counts network calls).
Its checkpoint is the teacher that the distillation configs load.

  python -m fewstep_jax.main --config=configs/digits/flow_matching.py --workdir=runs/quickstart
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='flow_matching', network='unet', dataset='digits')
  config.network.channels = 24
  config.network.channel_mult = (1, 2)
  config.network.num_res_blocks = 1
  config.network.attn_resolutions = (4,)
  config.method.time_sampler = 'logit_normal'
  config.method.label_dropout = 0.1
  config.method.solver = 'heun'
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
  config.eval.nfe = (2, 10, 50)
  config.eval.num_samples = 1000
  return config

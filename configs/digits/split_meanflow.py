"""Class-conditional SplitMeanFlow on the 8x8 digits from scratch, with guidance 1.5 folded into the boundary
target, so that sampling costs one network call a step.

  python -m fewstep_jax.main --config=configs/digits/split_meanflow.py --workdir=runs/digits_split_meanflow

Distillation instead: --config.method.teacher=runs/quickstart --config.method.teacher_guidance=1.5
--config.method.guidance=1.0 (the README's flow-matching teacher).
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='split_meanflow', network='unet', dataset='digits')
  config.network.channels = 24
  config.network.channel_mult = (1, 2)
  config.network.num_res_blocks = 1
  config.network.attn_resolutions = (4,)
  config.network.two_times = True
  config.network.time_scale = 1.0
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
  config.eval.nfe = (1, 2, 4)
  config.eval.num_samples = 1000
  return config

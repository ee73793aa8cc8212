"""Unconditional consistency flow matching on CIFAR-10, for accelerators: the reference's CIFAR-10 setting
(DDPM++ U-Net 128 channels, 1-2-2-2, 4 blocks, attention at 16 px, no dropout; two segments, alpha 1e-5,
dt 1e-3; batch 512, Adam lr 2e-4 with 5000 warmup steps, gradient clip 1, EMA 0.999999; 200k steps; 2-step
Euler sampling). FID is not embedded: use --mode=sample.

  python -m fewstep_jax.main --config=configs/cifar10/consistency_fm.py --workdir=runs/cifar10_cfm \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='consistency_fm', network='unet', dataset='tfds')
  config.data.tfds_name = 'cifar10'
  config.data.conditional = False
  config.network.channels = 128
  config.network.channel_mult = (1, 2, 2, 2)
  config.network.num_res_blocks = 4
  config.network.attn_resolutions = (16,)
  config.network.time_scale = 999.0
  config.method.num_segments = 2
  config.train.num_steps = 200_000
  config.train.batch_size = 512
  config.train.log_every = 100
  config.train.checkpoint_every = 10_000
  config.train.sample_every = 50_000
  config.optim.name = 'adam'
  config.optim.lr = 2e-4
  config.optim.schedule = 'warmup'
  config.optim.warmup_steps = 5000
  config.optim.grad_clip = 1.0
  config.optim.ema_rates = (0.999999,)
  config.eval.params = 'ema_0.999999'
  config.eval.nfe = (1, 2)
  config.eval.at_end = False
  return config

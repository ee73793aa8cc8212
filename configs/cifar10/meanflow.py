"""Unconditional MeanFlow on CIFAR-10 (the paper's 1-NFE FID 2.92 row), for accelerators.

Hyperparameters of the reference's CIFAR-10 script (Gsunshine/py-meanflow scripts/cifar10_v0.sh: EDM/DDPM++ U-Net,
128 channels, 2-2-2, 4 blocks, attention at 16 px, dropout 0.2; batch 1024, Adam lr 6e-4 with 200 warmup epochs =
9600 steps, 16000 epochs of 48 steps = 768k steps, EMA 0.9999; (t, r) logit-normal(-2, 2) with 75% r != t;
adaptive weight p = 0.75, c = 1e-3). Not reproduced here: the EDM augmentation pipeline (p = 0.12) with its
augmentation-label input, and the random horizontal flip (the data pipeline has no augmentation yet). FID is not
embedded: use --mode=sample.

  python -m fewstep_jax.main --config=configs/cifar10/meanflow.py --workdir=runs/cifar10_meanflow \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='meanflow', network='unet', dataset='tfds')
  config.data.tfds_name = 'cifar10'
  config.data.conditional = False
  config.network.channels = 128
  config.network.channel_mult = (2, 2, 2)
  config.network.num_res_blocks = 4
  config.network.attn_resolutions = (16,)
  config.network.dropout = 0.2
  config.network.two_times = True
  config.network.time_scale = 1.0
  config.method.time_mean = -2.0
  config.method.time_std = 2.0
  config.method.ratio_r_equal_t = 0.25
  config.method.adaptive_p = 0.75
  config.method.adaptive_c = 1e-3
  config.train.num_steps = 768_000
  config.train.batch_size = 1024
  config.train.log_every = 100
  config.train.checkpoint_every = 10_000
  config.train.sample_every = 50_000
  config.optim.name = 'adam'
  config.optim.lr = 6e-4
  config.optim.schedule = 'warmup'
  config.optim.warmup_steps = 9_600
  config.optim.ema_rates = (0.9999,)
  config.eval.params = 'ema_0.9999'
  config.eval.nfe = (1, 2)
  config.eval.at_end = False
  return config

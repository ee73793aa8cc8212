"""Class-conditional EDM teacher on CIFAR-10 (32x32, DDPM++-style U-Net, Karras et al. 2022 hyperparameters, the
official train.py's cifar10 defaults: Adam lr 1e-3 ramped up over 10 Mimg = 19531 steps, batch 512, dropout 0.13,
EMA half-life 0.5 Mimg, no label dropout (EDM trains no null label), 18-step Heun sampling = 35 NFE; reference
FID 1.79, or 1.97 unconditional), for accelerators. Not reproduced: the augmentation pipeline (p = 0.12) and the
EMA ramp-up. The unconditional teacher the consistency configs distil (the CM, iCT, ECT and sCM CIFAR-10 rows are
unconditional) is the second command.

  python -m fewstep_jax.main --config=configs/cifar10/edm.py --workdir=runs/cifar10_edm \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8
  python -m fewstep_jax.main --config=configs/cifar10/edm.py --workdir=runs/cifar10_edm_uncond \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.data.conditional=False
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='edm', network='unet', dataset='tfds')
  config.data.tfds_name = 'cifar10'
  config.network.channels = 128
  config.network.channel_mult = (2, 2, 2)
  config.network.num_res_blocks = 4
  config.network.attn_resolutions = (16,)
  config.network.dropout = 0.13
  config.network.time_scale = 250.0  # c_noise = ln(sigma) / 4 spans about [-1.6, 1.1].
  config.train.num_steps = 400_000
  config.train.batch_size = 512
  config.train.log_every = 100
  config.train.checkpoint_every = 10_000
  config.train.sample_every = 50_000
  config.optim.name = 'adam'
  config.optim.lr = 1e-3
  config.optim.schedule = 'warmup'
  config.optim.warmup_steps = 19_531
  config.method.label_dropout = 0.0
  # EDM averages with a 0.5 Mimg half-life: 0.5^(512 / 0.5e6) = 0.99929 per step at batch 512.
  config.optim.ema_rates = (0.99929,)
  config.eval.params = 'ema_0.99929'
  config.eval.nfe = (35,)
  config.eval.at_end = False
  return config

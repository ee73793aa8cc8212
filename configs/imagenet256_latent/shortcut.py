"""Class-conditional shortcut model on ImageNet 256x256 in SD-VAE latent space (32x32x4), DiT-XL/2: the paper's
FID 10.6 / 7.8 / 3.8 at 1 / 4 / 128 steps, for TPU pods / GPU clusters.

Reference hyperparameters: DiT-XL/2 (depth 28, hidden 1152, 16 heads, patch 2), batch 256, AdamW lr 1e-4,
weight decay 0.1, constant, 810k steps; M = 128 base steps, 1/8 of the batch bootstrapped from the EMA (0.999)
parameters, CFG 1.5 at the finest bootstrap level, 10% label dropout. The reference evaluates its raw
parameters (eval.params = 'params'). Latents as in configs/imagenet256_latent/meanflow.py.

  python -m fewstep_jax.main --config=configs/imagenet256_latent/shortcut.py --workdir=runs/in256_shortcut \
      --config.data.latents_dir=/path/to/imagenet256_sdvae_latents --config.mesh.data=32 --config.mesh.fsdp=8
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='shortcut', network='dit', dataset='latents')
  config.data.latents_dir = 'data/imagenet256_sdvae_latents'
  config.network.patch_size = 2
  config.network.hidden = 1152
  config.network.depth = 28
  config.network.heads = 16
  config.network.two_times = True
  config.method.base_steps = 128
  config.method.bootstrap_fraction = 0.125
  config.method.target_ema = 0.999
  config.method.bootstrap_guidance = 1.5
  config.train.num_steps = 810_000
  config.train.batch_size = 256
  config.train.log_every = 100
  config.train.checkpoint_every = 10_000
  config.train.sample_every = 100_000
  config.train.compute_dtype = 'bfloat16'
  config.optim.name = 'adamw'
  config.optim.lr = 1e-4
  config.optim.weight_decay = 0.1
  config.optim.ema_rates = (0.999,)
  config.eval.params = 'params'
  config.eval.nfe = (1, 4, 128)
  config.eval.at_end = False
  return config

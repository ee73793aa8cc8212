"""sCT on ImageNet-64 (class-conditional U-Net with a log-variance head), for accelerators.

  python -m fewstep_jax.main --config=configs/imagenet64/sct.py --workdir=runs/imagenet64_sct \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=32 --config.mesh.fsdp=8 [--config.method.init_from=RUN]

From METHODS.md §2: proposal (P_mean, P_std) = (-1.0, 1.6), tangent warmup over 10k steps, tangent
normalisation c = 0.1, 1 and 2 NFE (reference 2.04 / 1.48 FID with the paper's EDM2-architecture network; this
config uses the codebase's ImageNet-64 U-Net). Batch, learning rate, dropout, EMA and iteration count are this
codebase's choices where METHODS.md is silent.
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='sct', network='unet', dataset='tfds')
  config.data.tfds_name = 'imagenet_resized/64x64'
  config.network.channels = 192
  config.network.channel_mult = (1, 2, 3, 4)
  config.network.num_res_blocks = 3
  config.network.attn_resolutions = (32, 16, 8)
  config.network.dropout = 0.1
  config.network.logvar_head = True
  config.network.time_scale = 1.0  # c_noise(tau) = tau.
  config.method.p_mean = -1.0
  config.method.p_std = 1.6
  config.method.tangent_warmup_steps = 10_000
  config.method.label_dropout = 0.0
  config.train.num_steps = 200_000
  config.train.batch_size = 2048
  config.train.log_every = 100
  config.train.checkpoint_every = 5_000
  config.train.sample_every = 50_000
  config.train.compute_dtype = 'bfloat16'
  config.optim.name = 'adam'
  config.optim.lr = 1e-4
  config.optim.schedule = 'constant'
  config.optim.ema_rates = (0.9999,)
  config.eval.params = 'ema_0.9999'
  config.eval.nfe = (1, 2)
  config.eval.at_end = False
  return config

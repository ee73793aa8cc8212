"""sCT on CIFAR-10 (class-conditional DDPM++-style U-Net with a log-variance head), for accelerators.

  python -m fewstep_jax.main --config=configs/cifar10/sct.py --workdir=runs/cifar10_sct \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 [--config.method.init_from=RUN]

From METHODS.md §2: proposal (P_mean, P_std) = (-1.0, 1.4), tangent warmup over 10k steps, tangent
normalisation c = 0.1, 1-step sampling at pi/2 and 2-step through tau = 1.1; reference 2.97 / 2.06 FID.
The paper initialises from a pretrained TrigFlow diffusion model: pass it as `init_from` (same network config);
without one the run starts from scratch and the tangent warmup trains the diffusion target first. Batch, learning
rate, dropout, EMA and iteration count below are this codebase's choices where METHODS.md is silent.
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='sct', network='unet', dataset='tfds')
  config.data.tfds_name = 'cifar10'
  config.network.channels = 128
  config.network.channel_mult = (2, 2, 2)
  config.network.num_res_blocks = 4
  config.network.attn_resolutions = (16,)
  config.network.dropout = 0.2
  config.network.logvar_head = True
  config.network.time_scale = 1.0  # c_noise(tau) = tau.
  config.method.p_mean = -1.0
  config.method.p_std = 1.4
  config.method.tangent_warmup_steps = 10_000
  config.method.label_dropout = 0.0
  config.train.num_steps = 400_000
  config.train.batch_size = 512
  config.train.log_every = 100
  config.train.checkpoint_every = 10_000
  config.train.sample_every = 50_000
  config.optim.name = 'adam'
  config.optim.lr = 1e-4
  config.optim.schedule = 'constant'
  config.optim.ema_rates = (0.9999,)
  config.eval.params = 'ema_0.9999'
  config.eval.nfe = (1, 2)
  config.eval.at_end = False
  return config

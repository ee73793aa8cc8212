"""sCD on CIFAR-10 from the CIFAR-10 EDM teacher (configs/cifar10/edm.py), converted exactly to TrigFlow, for
accelerators; the student settings are those of configs/cifar10/sct.py (METHODS.md §2: proposal (-1.0, 1.4),
tangent warmup 10k, tangent normalisation c = 0.1).

  python -m fewstep_jax.main --config=configs/cifar10/scd.py --workdir=runs/cifar10_scd \
      --config.data.dir=/path/to/tensorflow_datasets --config.method.teacher=runs/cifar10_edm
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='scd', network='unet', dataset='tfds')
  config.data.tfds_name = 'cifar10'
  config.network.channels = 128
  config.network.channel_mult = (2, 2, 2)
  config.network.num_res_blocks = 4
  config.network.attn_resolutions = (16,)
  config.network.dropout = 0.2
  config.network.logvar_head = True
  config.network.time_scale = 1.0  # c_noise(tau) = tau.
  config.method.teacher = 'runs/cifar10_edm'
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

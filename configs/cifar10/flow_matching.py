"""Class-conditional flow-matching teacher on CIFAR-10 (32x32), for accelerators.

Needs the TFDS 'cifar10' dataset prepared in array_record format under --config.data.dir (docs/data.md).
Evaluation of CIFAR-10 samples (FID) is not embedded yet: eval.at_end is off; use --mode=sample.

  python -m fewstep_jax.main --config=configs/cifar10/flow_matching.py --workdir=runs/cifar10_fm \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='flow_matching', network='unet', dataset='tfds')
  config.data.tfds_name = 'cifar10'
  config.network.channels = 128
  config.network.channel_mult = (2, 2, 2)
  config.network.num_res_blocks = 4
  config.network.attn_resolutions = (16,)
  config.network.dropout = 0.13
  config.method.time_sampler = 'logit_normal'
  config.method.label_dropout = 0.1
  config.train.num_steps = 400_000
  config.train.batch_size = 512
  config.train.log_every = 100
  config.train.checkpoint_every = 10_000
  config.train.sample_every = 50_000
  config.optim.name = 'adam'
  config.optim.lr = 1e-3
  config.optim.schedule = 'inverse_sqrt'
  config.optim.warmup_steps = 10_000
  config.optim.decay_ref_steps = 70_000
  config.optim.ema_rates = (0.9999,)
  config.eval.params = 'ema_0.9999'
  config.eval.nfe = (35,)
  config.eval.at_end = False
  return config

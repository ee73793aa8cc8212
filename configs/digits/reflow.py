"""2-RF++ on the 8x8 digits: reflow on pairs from the README's flow-matching teacher with guidance 1.5 baked
into the pairs, U-shaped times, pseudo-Huber distance, initialised from the teacher (Lee et al. 2024).

  python -m fewstep_jax.main --config=configs/digits/flow_matching.py --workdir=runs/quickstart
  python -m fewstep_jax.tools.generate_pairs --teacher=runs/quickstart --out=data/pairs_digits --num=20000 --nfe=50 \
      --guidance=1.5
  python -m fewstep_jax.main --config=configs/digits/reflow.py --workdir=runs/digits_reflow

Sampling needs no guidance (one network call a step): the pairs already carry it.
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='reflow', network='unet', dataset='reflow_pairs')
  config.data.pairs_dir = 'data/pairs_digits'
  # The teacher's network (configs/digits/flow_matching.py), which init_from requires.
  config.network.channels = 24
  config.network.channel_mult = (1, 2)
  config.network.num_res_blocks = 1
  config.network.attn_resolutions = (4,)
  config.method.time_sampler = 'u_shaped'
  config.method.distance = 'pseudo_huber'
  config.method.huber_c = 0.00054 * 8.0  # iCT's c = 0.00054 sqrt(dim), with which the figures above were measured.
  config.method.init_from = 'runs/quickstart'
  config.method.label_dropout = 0.0
  config.train.num_steps = 2000
  config.train.batch_size = 128
  config.train.log_every = 100
  config.train.checkpoint_every = 1000
  config.optim.lr = 2e-4
  config.optim.schedule = 'constant'
  config.optim.grad_clip = 1.0
  config.optim.ema_rates = (0.999,)
  config.eval.nfe = (1, 2, 4)
  config.eval.num_samples = 1000
  return config

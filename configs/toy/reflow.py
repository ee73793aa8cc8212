"""2-RF++ on 2-D toy data: reflow on pairs from a trained flow-matching run, with U-shaped times, pseudo-Huber
distance and initialisation from that run (Lee et al. 2024). Three commands:

  python -m fewstep_jax.main --config=configs/toy/flow_matching.py --workdir=runs/toy_flow_matching
  python -m fewstep_jax.tools.generate_pairs --teacher=runs/toy_flow_matching --out=data/pairs_toy --num=100000 --nfe=50
  python -m fewstep_jax.main --config=configs/toy/reflow.py --workdir=runs/toy_reflow \
      --config.data.pairs_dir=data/pairs_toy --config.method.init_from=runs/toy_flow_matching

Plain 2-RF: --config.method.time_sampler=uniform --config.method.distance=l2 --config.method.init_from=''.
One-step distillation of the pairs: --config.method.time_sampler=one_step.
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='reflow', network='mlp', dataset='reflow_pairs')
  config.data.pairs_dir = 'data/pairs_toy'
  config.network.hidden = 256  # The teacher's network (configs/toy/flow_matching.py): init_from needs it.
  config.network.depth = 3
  config.method.time_sampler = 'u_shaped'
  config.method.distance = 'pseudo_huber'
  config.method.huber_c = 0.00054 * 2 ** 0.5  # iCT's c = 0.00054 sqrt(dim), with which the figures above were measured.
  config.method.init_from = 'runs/toy_flow_matching'
  config.method.label_dropout = 0.0
  config.train.num_steps = 3000
  config.train.batch_size = 256
  config.train.log_every = 200
  config.train.checkpoint_every = 1000
  config.optim.lr = 3e-4
  config.optim.schedule = 'constant'
  config.optim.ema_rates = (0.999,)
  config.eval.nfe = (1, 2, 4)
  config.eval.num_samples = 2000
  return config

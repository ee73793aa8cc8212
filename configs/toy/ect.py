"""ECT (easy consistency tuning, Geng et al. 2024) on 2-D toy data, tuned from the toy EDM run (same network):
the t -> r mapping tightens every 500 steps (6 stages in 3000 steps), un-squared L2 / (t - r); 1, 2 and 4 NFE.

  python -m fewstep_jax.main --config=configs/toy/edm.py --workdir=runs/toy_edm
  python -m fewstep_jax.main --config=configs/toy/ect.py --workdir=runs/toy_ect
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='ect', network='mlp', dataset='toy')
  common.few_step(config, two_times=False)
  config.network.time_scale = 250.0  # The EDM run's network, whose weights ECT starts from.
  config.method.init_from = 'runs/toy_edm'
  config.method.parameterization = 'edm'
  config.method.stage_steps = 500
  config.train.num_steps = 3000
  config.optim.lr = 2e-4
  return config

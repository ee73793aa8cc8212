"""SCT (stable consistency tuning, Wang et al. 2024) on 2-D toy data: ECT (configs/toy/ect.py) with the
variance-reduced target point, one Euler step of the batch's empirical denoiser from x_t to r, tuned from the toy
EDM run; 1, 2 and 4 NFE.

  python -m fewstep_jax.main --config=configs/toy/edm.py --workdir=runs/toy_edm
  python -m fewstep_jax.main --config=configs/toy/stable_ct.py --workdir=runs/toy_stable_ct
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='stable_ct', network='mlp', dataset='toy')
  common.few_step(config, two_times=False)
  config.network.time_scale = 250.0  # The EDM run's network, whose weights SCT starts from.
  config.method.init_from = 'runs/toy_edm'
  config.method.parameterization = 'edm'
  config.method.stage_steps = 500
  config.train.num_steps = 3000
  config.optim.lr = 2e-4
  return config

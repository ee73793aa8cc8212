"""Class-conditional ECT (easy consistency tuning, Geng et al. 2024) on the 8x8 digits, tuned from the digits EDM
run (configs/digits/edm.py, same network): the t -> r mapping tightens every 250 steps (8 stages), un-squared
L2 / (t - r); 1, 2 and 4 NFE without guidance.

  python -m fewstep_jax.main --config=configs/digits/edm.py --workdir=runs/digits_edm
  python -m fewstep_jax.main --config=configs/digits/ect.py --workdir=runs/digits_ect
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits/common.py


def get_config():
  config = base_config(method='ect', network='unet', dataset='digits')
  common.few_step(config, two_times=False)
  config.network.time_scale = 250.0  # The EDM run's network, whose weights ECT starts from.
  config.method.init_from = 'runs/digits_edm'
  config.method.parameterization = 'edm'
  config.method.stage_steps = 250
  config.optim.lr = 5e-4
  return config

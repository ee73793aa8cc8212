"""Class-conditional SCT (stable consistency tuning, Wang et al. 2024) on the 8x8 digits: ECT (configs/digits/ect.py)
with the variance-reduced target point, the batch's empirical denoiser within each class; tuned from the digits
EDM run; 1, 2 and 4 NFE.

  python -m fewstep_jax.main --config=configs/digits/edm.py --workdir=runs/digits_edm
  python -m fewstep_jax.main --config=configs/digits/stable_ct.py --workdir=runs/digits_stable_ct
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits/common.py


def get_config():
  config = base_config(method='stable_ct', network='unet', dataset='digits')
  common.few_step(config, two_times=False)
  config.network.time_scale = 250.0  # The EDM run's network, whose weights SCT starts from.
  config.method.init_from = 'runs/digits_edm'
  config.method.parameterization = 'edm'
  config.method.stage_steps = 250
  config.optim.lr = 5e-4
  return config

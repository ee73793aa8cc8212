"""Class-conditional TwinFlow on the 8x8 digits with the production batch split (end-to-end, near-diagonal,
any-interval and adversarial quarters; one network call per row) and the tutorial's CFG-enhanced target
(ratio 0.5), so that sampling costs one call a step. Its figures against the other methods: README, "Method comparison".

  python -m fewstep_jax.main --config=configs/digits/twinflow.py --workdir=runs/digits_twinflow
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits/common.py


def get_config():
  config = base_config(method='twinflow', network='unet', dataset='digits')
  common.few_step(config, two_times=True)
  config.network.time_scale = 1.0
  config.method.production_split = True
  config.method.cfg_ratio = 0.5
  config.method.target_ema = 0.99
  config.optim.ema_rates = (0.99, 0.999)
  return config

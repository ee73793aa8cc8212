"""Class-conditional sCT (continuous-time consistency training, TrigFlow) on the 8x8 digits, from scratch;
1, 2 and 4 NFE without guidance.

  python -m fewstep_jax.main --config=configs/digits/sct.py --workdir=runs/digits_sct

The tangent warmup (w = 0 -> 1 over the first 500 steps) stands in for the paper's pretrained initialisation.
"""
from fewstep_jax.config_base import base_config, digits_recipe


def get_config():
  config = base_config(method='sct', network='unet', dataset='digits')
  digits_recipe(config, two_times=False)
  config.network.logvar_head = True
  config.network.time_scale = 1.0  # c_noise(tau) = tau, unscaled (see configs/toy/sct.py).
  config.method.tangent_warmup_steps = 500
  config.method.label_dropout = 0.0  # Sampled without guidance.
  return config

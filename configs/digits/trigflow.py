"""Class-conditional TrigFlow diffusion pretraining on the 8x8 digits: sCT's network and parameterisation with the
tangent term switched off (w = 0, no tangent normalisation), i.e. the diffusion model that sCT and sCD start from
(Algorithm 1 of Lu & Song 2024). Its samples at 1-2 NFE are not meant to be good; it is an init.

  python -m fewstep_jax.main --config=configs/digits/trigflow.py --workdir=runs/digits_trigflow
  python -m fewstep_jax.main --config=configs/digits/sct.py --workdir=runs/digits_sct
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits/common.py


def get_config():
  config = base_config(method='sct', network='unet', dataset='digits')
  common.few_step(config, two_times=False)
  config.network.logvar_head = True  # The network of configs/digits/sct.py, which starts from this run.
  config.network.time_scale = 1.0
  config.method.label_dropout = 0.0
  config.method.diffusion_only = True
  config.method.tangent_norm = 'none'
  config.eval.nfe = (1, 2)
  return config

"""DMD2 (Yin et al. 2024) on the captioned digits: the one-step student and the critic start from the text EDM
teacher (CFG 2 in its score), normalised matching gradient, critic every step and student every 5th, no GAN head.

  python -m fewstep_jax.main --config=configs/digits_text/edm.py --workdir=runs/digits_text_edm
  python -m fewstep_jax.main --config=configs/digits_text/dmd2.py --workdir=runs/digits_text_dmd2
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits_text/common.py


def get_config():
  config = base_config(method='dmd2', network='sd_unet', dataset='digits_text')
  common.distillation(config)
  config.method.critic_optim.update(name='adam', lr=1e-4, b1=0.0, b2=0.99)
  # Student updates every 5th step: 2.5 times the steps and 3 times the lr of the 1:1 methods (as the digits').
  config.train.num_steps = 2500
  config.optim.lr = 3e-4
  return config

"""SiD (Zhou et al. 2024) on the captioned digits: the one-step generator (from sigma_init 2.5) and the critic start
from the text EDM teacher (CFG 2 in its score); alpha 1.2, 1:1 updates, critic first.

  python -m fewstep_jax.main --config=configs/digits_text/edm.py --workdir=runs/digits_text_edm
  python -m fewstep_jax.main --config=configs/digits_text/sid.py --workdir=runs/digits_text_sid
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits_text/common.py


def get_config():
  config = base_config(method='sid', network='sd_unet', dataset='digits_text')
  common.distillation(config)
  config.method.critic_optim.update(name='adam', lr=1e-4, b1=0.0, b2=0.99)
  return config

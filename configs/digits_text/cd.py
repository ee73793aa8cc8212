"""Consistency distillation (Song et al. 2023) of the captioned-digits EDM teacher (text CFG 2 baked into its
ODE), the student starting from the teacher's weights, trained as the teacher was; 1, 2 and 4 NFE.

  python -m fewstep_jax.main --config=configs/digits_text/edm.py --workdir=runs/digits_text_edm
  python -m fewstep_jax.main --config=configs/digits_text/cd.py --workdir=runs/digits_text_cd
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits_text/common.py


def get_config():
  config = base_config(method='cd', network='sd_unet', dataset='digits_text')
  common.network(config, time_scale=250.0)  # The teacher's network.
  common.training(config)
  config.method.update(teacher='runs/digits_text_edm', init_from='runs/digits_text_edm', teacher_guidance=2.0)
  config.eval.nfe = (1, 2, 4)
  return config

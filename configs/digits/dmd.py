"""DMD (Yin et al. 2023) on the 8x8 digits (class-conditional, teacher guidance 1.5 distilled in), distilling the digits
EDM teacher: 1:1 updates plus the regression loss (weight 0.25, squared L2) on the teacher's ODE pairs.
Settings: `config_base.DISTILLATION_SETUPS['digits']`.
Measured here (1000 steps, 10 minutes on 2 CPU cores): Fréchet 4.77, class accuracy 98.1% at 1 NFE
(the teacher 3.95 / 96.4% at 50 NFE, floor 1.94).
  python -m fewstep_jax.main --config=configs/digits/edm.py --workdir=runs/digits_edm
  python -m fewstep_jax.reflow --teacher=runs/digits_edm --out=runs/digits_edm_pairs --num=1024 --nfe=30
  python -m fewstep_jax.main --config=configs/digits/dmd.py --workdir=runs/digits_dmd
"""
from fewstep_jax.config_base import base_config, distillation_recipe


def get_config():
  config = base_config(method='dmd', network='unet', dataset='digits')
  distillation_recipe(config, 'digits')
  config.method.regression_pairs = 'runs/digits_edm_pairs'
  return config

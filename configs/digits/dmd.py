"""DMD (Yin et al. 2023) on the 8x8 digits (class-conditional, teacher guidance 1.5 distilled in), distilling the digits
EDM teacher: 1:1 updates plus the regression loss (weight 0.25, squared L2) on the teacher's ODE pairs.
Shared settings: configs/digits/common.py.
Against the other methods: README, "Method comparison" (experiments/compare.py).
  python -m fewstep_jax.main --config=configs/digits/edm.py --workdir=runs/digits_edm
  python -m fewstep_jax.tools.generate_pairs --teacher=runs/digits_edm --out=runs/digits_edm_pairs --num=1024 --nfe=30
  python -m fewstep_jax.main --config=configs/digits/dmd.py --workdir=runs/digits_dmd
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits/common.py


def get_config():
  config = base_config(method='dmd', network='unet', dataset='digits')
  common.distillation(config)
  config.method.regression_pairs = 'runs/digits_edm_pairs'
  return config

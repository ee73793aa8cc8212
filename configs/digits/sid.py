"""SiD (Zhou et al. 2024) on the 8x8 digits (class-conditional, teacher guidance 1.5 distilled in), distilling the
digits EDM teacher: alpha 1.2, generator from sigma_init 2.5, 1:1 updates, critic first.
Shared settings: configs/digits/common.py.
Against the other methods: README, "Method comparison" (experiments/compare.py).
  python -m fewstep_jax.main --config=configs/digits/edm.py --workdir=runs/digits_edm
  python -m fewstep_jax.main --config=configs/digits/sid.py --workdir=runs/digits_sid
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits/common.py


def get_config():
  config = base_config(method='sid', network='unet', dataset='digits')
  common.distillation(config)
  return config

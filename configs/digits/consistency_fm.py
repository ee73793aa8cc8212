"""Class-conditional consistency flow matching (two segments) on the 8x8 digits, sampled without guidance so that
1 NFE is one network call.

  python -m fewstep_jax.main --config=configs/digits/consistency_fm.py --workdir=runs/digits_consistency_fm
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits/common.py


def get_config():
  config = base_config(method='consistency_fm', network='unet', dataset='digits')
  common.few_step(config, two_times=False)
  # Consistency carries the data from each segment's end one dt at a time: with the reference's dt = 1e-3
  # 2000 steps were not enough for the labels to reach the samples (2-NFE Frechet 35, accuracy 0.10);
  # dt = 0.05 gives 17 / 0.87.
  config.method.dt = 0.05
  return config

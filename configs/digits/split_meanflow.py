"""Class-conditional SplitMeanFlow on the 8x8 digits from scratch, with guidance 1.5 folded into the boundary
target, so that sampling costs one network call a step.

  python -m fewstep_jax.main --config=configs/digits/split_meanflow.py --workdir=runs/digits_split_meanflow

Distillation instead: --config.method.teacher=runs/quickstart --config.method.teacher_guidance=1.5
--config.method.guidance=1.0 (the README's flow-matching teacher).
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits/common.py


def get_config():
  config = base_config(method='split_meanflow', network='unet', dataset='digits')
  common.few_step(config, two_times=True)
  config.network.time_scale = 1.0
  config.method.guidance = 1.5
  return config

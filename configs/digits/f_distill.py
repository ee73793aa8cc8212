"""f-distill (Xu et al. 2025) on the 8x8 digits (class-conditional, teacher guidance 1.5 distilled in), distilling the
digits EDM teacher: DMD2's matching gradient weighted by the Jensen-Shannon h(r) of the GAN head's density ratio
(the head on the teacher's bottleneck), critic every step and student every 5th.
Shared settings: configs/digits/common.py.
Against the other methods: README, "Method comparison" (experiments/compare.py).
  python -m fewstep_jax.main --config=configs/digits/edm.py --workdir=runs/digits_edm
  python -m fewstep_jax.main --config=configs/digits/f_distill.py --workdir=runs/digits_f_distill
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits/common.py


def get_config():
  config = base_config(method='f_distill', network='unet', dataset='digits')
  common.distillation(config)
  config.method.update(divergence='js', gan_generator_weight=3e-3)
  # As configs/digits/dmd2.py: 2.5 times the steps and 3 times the lr of the 1:1 methods.
  config.train.num_steps = 2500
  config.optim.lr = 3e-4
  return config

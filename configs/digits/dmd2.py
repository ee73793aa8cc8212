"""DMD2 (Yin et al. 2024) on the 8x8 digits (class-conditional, teacher guidance 1.5 distilled in), distilling the
digits EDM teacher: normalised matching gradient, critic every step and student every 5th, the GAN head
(weights 1e-2 and 3e-3).
Shared settings: configs/digits/common.py.
Against the other methods: README, "Method comparison" (experiments/compare.py).
  python -m fewstep_jax.main --config=configs/digits/edm.py --workdir=runs/digits_edm
  python -m fewstep_jax.main --config=configs/digits/dmd2.py --workdir=runs/digits_dmd2
A 4-step student with backward simulation:
  python -m fewstep_jax.main --config=configs/digits/dmd2.py --workdir=runs/digits_dmd2_4step \
      --config.method.student_sigmas='(10.0, 2.0, 0.5)' --config.eval.nfe='(1, 4)'
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits/common.py


def get_config():
  config = base_config(method='dmd2', network='unet', dataset='digits')
  common.distillation(config)
  config.method.update(gan_weight=1e-2, gan_generator_weight=3e-3)
  # Student updates every 5th step: 2.5 times the steps and 3 times the lr of the 1:1 methods.
  config.train.num_steps = 2500
  config.optim.lr = 3e-4
  return config

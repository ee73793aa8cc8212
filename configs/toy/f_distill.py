"""f-distill (Xu et al. 2025) on the 2-D toy data (8 gaussians), distilling the toy EDM teacher: DMD2's matching
gradient weighted by the Jensen-Shannon h(r) of the GAN head's density ratio (the head on the teacher's last hidden
state), critic every step and student every 5th.
Shared settings: configs/toy/common.py.
Against the other methods: README, "Method comparison" (experiments/compare.py).
  python -m fewstep_jax.main --config=configs/toy/edm.py --workdir=runs/toy_edm
  python -m fewstep_jax.main --config=configs/toy/f_distill.py --workdir=runs/toy_f_distill
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='f_distill', network='mlp', dataset='toy')
  common.distillation(config)
  config.method.divergence = 'js'
  # As configs/toy/dmd2.py: three times the steps and lr of the 1:1 methods give the student 2400 updates.
  config.train.num_steps = 12000
  config.optim.lr = 3e-4
  return config

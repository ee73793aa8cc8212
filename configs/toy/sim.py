"""SIM (Luo et al. 2024) on the 2-D toy data (8 gaussians), distilling the toy EDM teacher: pseudo-Huber c = 0.01 on the
score difference, generator from sigma_init 2.5, 1:1 updates.
Shared settings: configs/toy/common.py.
Against the other methods: README, "Method comparison" (experiments/compare.py).

On this toy SIM keeps only some of the eight modes, at every c tried (3000 steps; parts covered 0.5 at c = 0.01,
0.625 at 0.1, 0.375 at 1, 0.25 at 10; 0.75 with a cosine learning-rate decay), where SiD, with the same roles,
levels and optimizer, covers all eight (sliced W2 0.0042), and so does SiD without its alpha term (0.0044). What
differs is SIM's generator loss: the pseudo-Huber direction d'(y) of the score difference, unit-length wherever
||y|| >> c, with the time weighting sigma^2 (methods/sid.py). No official SIM code is public to compare its
weighting with.
  python -m fewstep_jax.main --config=configs/toy/edm.py --workdir=runs/toy_edm
  python -m fewstep_jax.main --config=configs/toy/sim.py --workdir=runs/toy_sim
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='sim', network='mlp', dataset='toy')
  common.distillation(config)
  # In 2-D the score difference is small: a smaller c makes d'(y) a unit direction at more levels (sliced W2 at
  # 1 NFE 0.045 with c = 0.01 against 0.12 with c = 1).
  config.method.huber_c = 0.01
  return config

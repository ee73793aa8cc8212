"""CTM (consistency trajectory models, Kim et al. 2024) on 2-D toy data from the toy EDM teacher: the jump
G(x_t, t, s) on a two-time MLP that starts from the teacher's weights (its s embedding fresh), soft consistency
through k ~ p(k) ∝ k teacher Heun steps on the 18-point grid, adaptive DSM, EMA target 0.999; 1, 2 and 4 NFE.

  python -m fewstep_jax.main --config=configs/toy/edm.py --workdir=runs/toy_edm
  python -m fewstep_jax.main --config=configs/toy/ctm.py --workdir=runs/toy_ctm
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='ctm', network='mlp', dataset='toy')
  common.few_step(config, two_times=True)
  config.network.time_scale = 250.0  # The EDM run's network (c_noise = ln(sigma) / 4), plus the s embedding.
  config.method.teacher = 'runs/toy_edm'
  config.train.num_steps = 3000
  config.optim.lr = 2e-4
  return config

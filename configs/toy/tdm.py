"""TDM (Luo et al. 2025) on the 2-D toy data (8 gaussians), distilling the toy EDM teacher: a 4-stage deterministic
student (sigma 80, 10, 2, 0.5), the student's lr a fifth of the critic's.
Settings: `config_base.DISTILLATION_SETUPS['toy']`.
Measured here (4000 steps, 4 minutes on 2 CPU cores): sliced W2 0.0087 at 4 NFE, 0.14 at 1 (the teacher 0.62 at 1
NFE and 0.0066 at 50, floor 0.0022).
  python -m fewstep_jax.main --config=configs/toy/edm.py --workdir=runs/toy_edm
  python -m fewstep_jax.main --config=configs/toy/tdm.py --workdir=runs/toy_tdm
"""
from fewstep_jax.config_base import base_config, distillation_recipe


def get_config():
  config = base_config(method='tdm', network='mlp', dataset='toy')
  distillation_recipe(config, 'toy')
  config.method.critic_optim.lr = 5 * config.optim.lr
  config.eval.nfe = (1, 2, 4)
  return config

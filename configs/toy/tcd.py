"""TCD (trajectory consistency distillation, Zheng et al. 2024) on 2-D toy data from the toy EDM teacher: CD whose
student and target outputs are both moved by DDIM to one random grid level s <= sigma_n and compared there
(18-point grid, EMA target 0.95, squared L2); sampled with TCD's gamma 0.3 at 1, 2 and 4 NFE.

  python -m fewstep_jax.main --config=configs/toy/edm.py --workdir=runs/toy_edm
  python -m fewstep_jax.main --config=configs/toy/tcd.py --workdir=runs/toy_tcd
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='tcd', network='mlp', dataset='toy')
  common.few_step(config, two_times=False)
  config.network.time_scale = 250.0  # The EDM run's network, whose weights the student starts from.
  config.method.update(teacher='runs/toy_edm', init_from='runs/toy_edm')
  config.train.num_steps = 3000
  config.optim.lr = 2e-4
  return config

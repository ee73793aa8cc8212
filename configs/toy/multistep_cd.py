"""Multistep consistency distillation (Heek et al. 2024) on 2-D toy data from the toy EDM teacher: 4 segments, each
consistency model mapping to its segment's start (compared in data space through DDIM and its inverse), v-loss
weight, the teacher-step curriculum 64 -> 1280 over the run; sampled with 4 deterministic DDIM steps between the
segment boundaries (1 and 2 NFE jump several segments at once).

  python -m fewstep_jax.main --config=configs/toy/edm.py --workdir=runs/toy_edm
  python -m fewstep_jax.main --config=configs/toy/multistep_cd.py --workdir=runs/toy_multistep_cd
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='multistep_cd', network='mlp', dataset='toy')
  common.few_step(config, two_times=False)
  config.network.time_scale = 250.0  # The EDM run's network, whose weights the student starts from.
  config.method.update(teacher='runs/toy_edm', init_from='runs/toy_edm', segments=4, anneal_steps=3000)
  config.train.num_steps = 3000
  config.optim.lr = 2e-4
  return config

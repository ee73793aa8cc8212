"""sCD (continuous-time consistency distillation, TrigFlow) on 2-D toy data from the toy flow-matching teacher,
converted exactly to TrigFlow; 1, 2 and 4 NFE.

  python -m fewstep_jax.main --config=configs/toy/flow_matching.py --workdir=runs/toy_flow_matching
  python -m fewstep_jax.main --config=configs/toy/scd.py --workdir=runs/toy_scd
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='scd', network='mlp', dataset='toy')
  common.few_step(config, two_times=False)
  config.network.logvar_head = True
  config.network.time_scale = 1.0  # As in configs/toy/sct.py.
  config.method.teacher = 'runs/toy_flow_matching'
  config.method.tangent_warmup_steps = 1000
  return config

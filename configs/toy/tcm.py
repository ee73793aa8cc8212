"""TCM (truncated consistency models, Lee et al. 2024) stage 2 on 2-D toy data: the toy ECT run (stage 1) tuned on
sigma >= 1 only, frozen below it; a quarter of each batch at the boundary sigma = 1 with weight 0.1; ECT's ratio
held at stage 1's last (1 - 2^-6); 1, 2 and 4 NFE.

  python -m fewstep_jax.main --config=configs/toy/edm.py --workdir=runs/toy_edm
  python -m fewstep_jax.main --config=configs/toy/ect.py --workdir=runs/toy_ect
  python -m fewstep_jax.main --config=configs/toy/tcm.py --workdir=runs/toy_tcm
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='tcm', network='mlp', dataset='toy')
  common.few_step(config, two_times=False)
  config.network.time_scale = 250.0  # The ECT run's network.
  config.method.stage1 = 'runs/toy_ect'
  config.method.ratio = 1 - 2.0**-6  # configs/toy/ect.py ends in stage 5 (q = 2).
  config.train.num_steps = 3000
  # method.stage1_steps (the stage-1 steps stage 2's counters continue from, the ImageNet-64 row's 800k) stays 0:
  # this cosine schedule spans stage 2's own steps, and an offset would start it at its end.
  config.optim.lr = 1e-4
  return config

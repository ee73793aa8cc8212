"""Class-conditional TCM (truncated consistency models, Lee et al. 2024) stage 2 on the 8x8 digits: the digits ECT run
(stage 1) tuned on sigma >= 1 only, frozen below it; a quarter of each batch at the boundary with weight 0.1;
ECT's ratio held at stage 1's last (1 - 2^-8); 1, 2 and 4 NFE.

  python -m fewstep_jax.main --config=configs/digits/edm.py --workdir=runs/digits_edm
  python -m fewstep_jax.main --config=configs/digits/ect.py --workdir=runs/digits_ect
  python -m fewstep_jax.main --config=configs/digits/tcm.py --workdir=runs/digits_tcm
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits/common.py


def get_config():
  config = base_config(method='tcm', network='unet', dataset='digits')
  common.few_step(config, two_times=False)
  config.network.time_scale = 250.0  # The ECT run's network.
  config.method.stage1 = 'runs/digits_ect'
  config.method.ratio = 1 - 2.0**-8  # configs/digits/ect.py ends in stage 7 (q = 2).
  config.train.num_steps = 1000
  # method.stage1_steps (the stage-1 steps stage 2's counters continue from, the ImageNet-64 row's 800k) stays 0:
  # this cosine schedule spans stage 2's own steps, and an offset would start it at its end.
  config.optim.lr = 2e-4
  return config

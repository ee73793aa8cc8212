"""Class-conditional CTM (consistency trajectory models, Kim et al. 2024) on the 8x8 digits from the digits EDM run
(guidance 1.5 baked in): the jump G(x_t, t, s) on the teacher's U-Net with a second time embedding, starting from
the teacher's weights; soft consistency through k ~ p(k) ∝ k teacher Heun steps on the 18-point grid (at most 6
here, the paper's 17 would cost three times the teacher calls), adaptive DSM, EMA target 0.999; 1000 steps; 1, 2
and 4 NFE.

  python -m fewstep_jax.main --config=configs/digits/edm.py --workdir=runs/digits_edm
  python -m fewstep_jax.main --config=configs/digits/ctm.py --workdir=runs/digits_ctm
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits/common.py


def get_config():
  config = base_config(method='ctm', network='unet', dataset='digits')
  common.few_step(config, two_times=True)
  config.network.time_scale = 250.0  # The EDM run's network: c_noise = ln(sigma) / 4.
  config.method.update(teacher='runs/digits_edm', teacher_guidance=1.5, heun_steps=6)
  config.train.num_steps = 1000
  config.optim.lr = 5e-4
  return config

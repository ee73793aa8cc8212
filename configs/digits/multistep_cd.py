"""Class-conditional multistep consistency distillation (Heek et al. 2024) on the 8x8 digits from the digits EDM run
(guidance 1.5 baked in), starting from its weights: 4 segments, v-loss weight, the teacher-step curriculum
64 -> 1280 over the run; sampled with 4 deterministic DDIM steps between the segment boundaries.

  python -m fewstep_jax.main --config=configs/digits/edm.py --workdir=runs/digits_edm
  python -m fewstep_jax.main --config=configs/digits/multistep_cd.py --workdir=runs/digits_multistep_cd
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits/common.py


def get_config():
  config = base_config(method='multistep_cd', network='unet', dataset='digits')
  common.few_step(config, two_times=False)
  config.network.time_scale = 250.0  # The EDM run's network: c_noise = ln(sigma) / 4.
  config.method.update(teacher='runs/digits_edm', init_from='runs/digits_edm', teacher_guidance=1.5, segments=4,
                        anneal_steps=2000)
  config.optim.lr = 5e-4
  return config

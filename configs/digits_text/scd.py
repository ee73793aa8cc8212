"""sCD (Lu & Song 2024, continuous-time consistency distillation) of the captioned-digits EDM teacher, text CFG 2
baked into the teacher's velocity; the student starts from the teacher's weights on its network, read exactly as
TrigFlow's F (method.parameterization='edm', as configs/imagenet64/scd.py does with EDM2), trained as the teacher
was; 1, 2 and 4 NFE.

  python -m fewstep_jax.main --config=configs/digits_text/edm.py --workdir=runs/digits_text_edm
  python -m fewstep_jax.main --config=configs/digits_text/scd.py --workdir=runs/digits_text_scd
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits_text/common.py


def get_config():
  config = base_config(method='scd', network='sd_unet', dataset='digits_text')
  common.network(config, time_scale=250.0)  # The teacher's network.
  common.training(config)
  # The tangent term ramps in over the first 200 steps; the start is already a diffusion model (the teacher).
  config.method.update(teacher='runs/digits_text_edm', init_from='runs/digits_text_edm', teacher_guidance=2.0,
                       parameterization='edm', tangent_warmup_steps=200, label_dropout=0.0)
  config.eval.nfe = (1, 2, 4)
  return config

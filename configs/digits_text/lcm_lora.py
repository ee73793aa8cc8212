"""LCM-LoRA (Luo et al. 2023b) of the captioned-digits EDM teacher: LCM (configs/digits_text/lcm.py) with rank-8 LoRA
factors over the teacher's own weights (diffusers' LCM-LoRA targets), no guidance embedding (w guides the teacher
only) and no target network (theta- = sg theta); 1, 2 and 4 NFE.

  python -m fewstep_jax.main --config=configs/digits_text/edm.py --workdir=runs/digits_text_edm
  python -m fewstep_jax.main --config=configs/digits_text/lcm_lora.py --workdir=runs/digits_text_lcm_lora
  python -m fewstep_jax.tools.export_lora --workdir=runs/digits_text_lcm_lora --out=exports/digits_text_lcm_lora
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits_text/common.py


def get_config():
  config = base_config(method='lcm', network='sd_unet', dataset='digits_text')
  common.network(config, time_scale=250.0)
  common.training(config)
  config.method.update(teacher='runs/digits_text_edm', init_from='runs/digits_text_edm', parameterization='edm',
                       w_min=0.0, w_max=2.0, target_ema=0.0)
  config.lora.update(rank=8, alpha=8.0)
  config.eval.nfe = (1, 2, 4)
  return config

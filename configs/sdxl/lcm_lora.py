r"""LCM-LoRA (Luo et al. 2023b) of SDXL base, as diffusers' example distils it (examples/consistency_distillation/
README_sdxl.md, its train_lcm_distill_lora_sdxl_wds.py command): configs/sdxl/lcm.py's settings with rank-64 LoRA
factors (alpha 64) on diffusers' LCM-LoRA modules over the teacher's own weights, no guidance embedding, no target
network, and the README's learning rate for it, 1e-4.

  python -m fewstep_jax.main --config=configs/sdxl/lcm_lora.py --workdir=runs/sdxl_lcm_lora \
      --config.data.latents_dir=latents/laion_a6_sdxl --config.mesh.data=8
  python -m fewstep_jax.tools.export_lora --workdir=runs/sdxl_lcm_lora --out=exports/sdxl_lcm_lora
"""
from fewstep_jax.config_base import base_config, load_sibling

sd15_lcm = load_sibling(__file__.replace('/sdxl/', '/sd15/'), 'lcm')  # configs/sd15/lcm.py


def get_config():
  config = base_config(method='lcm', network='sd_unet', dataset='latents')
  sd15_lcm.lcm(config, preset='sdxl_base', latents_dir='latents/laion_a6_sdxl', teacher='runs/sdxl')
  config.method.update(init_from='runs/sdxl', target_ema=0.0)
  config.lora.update(rank=64, alpha=64.0)
  config.optim.lr = 1e-4
  return config

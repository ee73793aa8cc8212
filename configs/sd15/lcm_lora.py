r"""LCM-LoRA (Luo et al. 2023b) of Stable Diffusion 1.5, as diffusers' example distils it (its
train_lcm_distill_lora_sd_wds.py command in examples/consistency_distillation/README.md): configs/sd15/lcm.py's
settings with rank-64 LoRA factors (alpha 64: scale 1) on diffusers' LCM-LoRA modules over the teacher's own weights,
no guidance embedding (w guides the teacher only) and no target network. Export it for diffusers' pipelines:

  python -m fewstep_jax.main --config=configs/sd15/lcm_lora.py --workdir=runs/sd15_lcm_lora \
      --config.data.latents_dir=latents/laion_a6_sd15 --config.mesh.data=8
  python -m fewstep_jax.tools.export_lora --workdir=runs/sd15_lcm_lora --out=exports/sd15_lcm_lora
"""
from fewstep_jax.config_base import base_config, load_sibling

sd15_lcm = load_sibling(__file__, 'lcm')  # configs/sd15/lcm.py


def get_config():
  config = base_config(method='lcm', network='sd_unet', dataset='latents')
  sd15_lcm.lcm(config, preset='sd15', latents_dir='latents/laion_a6_sd15', teacher='runs/sd15')
  config.method.update(init_from='runs/sd15', target_ema=0.0)
  config.lora.update(rank=64, alpha=64.0)
  return config

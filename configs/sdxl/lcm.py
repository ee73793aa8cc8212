r"""LCM (Luo et al. 2023) of SDXL base, as diffusers' example distils it (examples/consistency_distillation/
README_sdxl.md, its train_lcm_distill_sdxl_wds.py command): configs/sd15/lcm.py's settings at 1024 px (128x128x4
latents, the VAE's scaling 0.13025) on SDXL's U-Net with its pooled text embedding and size and crop ids, 12 images
per device (8 devices here, as the SD 1.5 config: the README gives none). Deviation: the README's
--use_fix_crop_and_size gives every image the time ids (1024, 1024, 0, 0, 1024, 1024); the captioned latents here
carry the ids of the crop encode_latents made.

  python -m fewstep_jax.tools.import_checkpoint --src=stable-diffusion-xl-base-1.0 --out=runs/sdxl
  python -m fewstep_jax.tools.encode_latents --vae=sdxl-vae-fp16-fix/diffusion_pytorch_model.safetensors \
      --text_encoders=stable-diffusion-xl-base-1.0 --jsonl=laion_a6.jsonl --image_size=1024 \
      --out=latents/laion_a6_sdxl --eval_prompts=configs/prompts.txt
  python -m fewstep_jax.main --config=configs/sdxl/lcm.py --workdir=runs/sdxl_lcm \
      --config.data.latents_dir=latents/laion_a6_sdxl --config.mesh.data=8
"""
from fewstep_jax.config_base import base_config, load_sibling

sd15_lcm = load_sibling(__file__.replace('/sdxl/', '/sd15/'), 'lcm')  # configs/sd15/lcm.py


def get_config():
  config = base_config(method='lcm', network='sd_unet', dataset='latents')
  config.network.guidance_embedding = 256
  return sd15_lcm.lcm(config, preset='sdxl_base', latents_dir='latents/laion_a6_sdxl', teacher='runs/sdxl')

r"""LCM (Luo et al. 2023) of Stable Diffusion 1.5, as diffusers' example distils it
(examples/consistency_distillation/README.md, its train_lcm_distill_sd_wds.py command): the student is SD 1.5's U-Net
plus LCM's 256-wide guidance-scale embedding (the rest from the teacher), w ~ U[5, 15], the 50-point DDIM skipping
grid, Huber c = 0.001, EMA target 0.95, AdamW lr 1e-6 without weight decay at a constant rate (diffusers' 'constant'
schedule has no warmup), gradient clipping 1, 1000 steps at 512 px (64x64x4 latents), 12 images per device (the
README's; its device count is not given, 8 here: a global batch of 96). Sampled at w = 7.5 (a pipeline's
guidance_scale 8.5) with 1, 2, 4 and 8 steps. The paper's LAION-Aesthetics rows are not reproduced by this config:
they distil other U-Nets. Deviation: the README's 8-bit Adam (bitsandbytes) is float32 AdamW here.

  python -m fewstep_jax.tools.import_checkpoint --src=stable-diffusion-v1-5 --out=runs/sd15
  python -m fewstep_jax.tools.encode_latents --vae=stable-diffusion-v1-5/vae --text_encoders=stable-diffusion-v1-5 \
      --jsonl=laion_a6.jsonl --image_size=512 --out=latents/laion_a6_sd15 --eval_prompts=configs/prompts.txt
  python -m fewstep_jax.main --config=configs/sd15/lcm.py --workdir=runs/sd15_lcm \
      --config.data.latents_dir=latents/laion_a6_sd15 --config.mesh.data=8
"""
from fewstep_jax.config_base import base_config


def lcm(config, *, preset: str, latents_dir: str, teacher: str):
  """The diffusers example's settings (module docstring), shared by the SD 1.5 and SDXL configs."""
  config.network.preset = preset
  config.data.update(latents_dir=latents_dir, latent_scale=0.18215 if preset == 'sd15' else 0.13025)
  config.method.update(teacher=teacher, parameterization='sd', distance='huber', huber_c=0.001, w_min=5.0,
                       w_max=15.0, target_ema=0.95, sample_w=7.5)
  config.optim.update(name='adamw', lr=1e-6, weight_decay=0.0, schedule='constant', grad_clip=1.0, ema_rates=())
  config.train.update(num_steps=1000, batch_size=96, log_every=50, checkpoint_every=200,
                      compute_dtype='bfloat16')  # The README trains in fp16 mixed precision.
  config.eval.update(params='params', nfe=(1, 2, 4, 8), sample_grid=8, batch_size=8)
  return config


def get_config():
  config = base_config(method='lcm', network='sd_unet', dataset='latents')
  config.network.guidance_embedding = 256
  return lcm(config, preset='sd15', latents_dir='latents/laion_a6_sd15', teacher='runs/sd15')

r"""Stable Diffusion XL base 1.0 sampled as its pipeline samples it: classifier-free guidance 5.0
(StableDiffusionXLPipeline's guidance_scale default) against zeros (its force_zeros_for_empty_prompt), the pooled
text embedding and time_ids (1024, 1024, 0, 0, 1024, 1024), 50 steps (its num_inference_steps default, 100 U-Net
calls with guidance) of Euler on SD's 'leading' timesteps 981, 961, ..., 1: the pipeline's default scheduler,
EulerDiscreteScheduler, step for step (fewstep_jax/methods/teacher.py); decoded by the pipeline's VAE at its
scaling factor (0.13025, from vae/config.json; --config.data.vae=sdxl-vae-fp16-fix decodes with that folder's
weights instead). Prompts: data.prompts_file, one a line; image i has prompt i mod N.

  python -m fewstep_jax.tools.import_checkpoint --src=stable-diffusion-xl-base-1.0 --out=runs/sdxl
  python -m fewstep_jax.main --config=configs/sdxl/teacher.py --workdir=runs/sdxl_samples --mode=sample \
      --config.data.pipeline=stable-diffusion-xl-base-1.0 --config.data.prompts_file=configs/prompts.txt

writes runs/sdxl_samples/samples/step_0000000_nfe100_euler_guidance5.png (eval.sample_grid images, 1024 px).
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='teacher', network='sd_unet', dataset='pipeline_prompts')
  config.network.preset = 'sdxl_base'  # The teacher run's own network config is what samples; this names it.
  config.method.update(teacher='runs/sdxl', guidance=5.0, solver='euler', grid='ddpm_leading', steps_offset=1,
                       data_std=1.0)
  config.data.update(pipeline='stable-diffusion-xl-base-1.0', prompts_file='configs/prompts.txt')
  config.eval.update(nfe=(100,), sample_grid=8, batch_size=4, params='params', seed=0)
  return config

r"""Stable Diffusion 1.5 sampled as its pipeline samples it: classifier-free guidance 7.5 (StableDiffusionPipeline's
guidance_scale default) against the empty prompt's encoding, 50 steps (its num_inference_steps default, 100 U-Net
calls with guidance) on SD's 'leading' timesteps 981, 961, ..., 1, Euler (diffusers' EulerDiscreteScheduler; the
pipeline's own default scheduler is PNDM, which has no counterpart here: fewstep_jax/methods/teacher.py), decoded by
the pipeline's VAE at its scaling factor (0.18215). Prompts: data.prompts_file, one a line; image i has prompt
i mod N.

  python -m fewstep_jax.tools.import_checkpoint --src=stable-diffusion-v1-5 --out=runs/sd15
  python -m fewstep_jax.main --config=configs/sd15/teacher.py --workdir=runs/sd15_samples --mode=sample \
      --config.data.pipeline=stable-diffusion-v1-5 --config.data.prompts_file=configs/prompts.txt

writes runs/sd15_samples/samples/step_0000000_nfe100_euler_guidance7_5.png (eval.sample_grid images, 512 px).
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='teacher', network='sd_unet', dataset='pipeline_prompts')
  config.network.preset = 'sd15'  # The teacher run's own network config is what samples; this names it.
  config.method.update(teacher='runs/sd15', guidance=7.5, solver='euler', grid='ddpm_leading', steps_offset=1,
                       data_std=1.0)
  config.data.update(pipeline='stable-diffusion-v1-5', prompts_file='configs/prompts.txt')
  config.eval.update(nfe=(100,), sample_grid=8, batch_size=8, params='params', seed=0)
  return config

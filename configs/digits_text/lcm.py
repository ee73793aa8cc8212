"""LCM (latent consistency distillation, Luo et al. 2023) of the captioned-digits EDM teacher: the student is the
teacher's sd_unet plus LCM's guidance-scale embedding (network.guidance_embedding, 32 wide; its projection fresh, the
rest from the teacher's weights), distilled on the 50-point DDIM skipping grid of SD's schedule with the teacher
guided at w ~ U[0, 2] (a CFG scale of 1 to 3 around the teacher's best, 2; SD's range is [5, 15]); EMA target 0.95,
squared L2; trained as the teacher was; 1, 2 and 4 NFE at w = 1.

  python -m fewstep_jax.main --config=configs/digits_text/edm.py --workdir=runs/digits_text_edm
  python -m fewstep_jax.main --config=configs/digits_text/lcm.py --workdir=runs/digits_text_lcm
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits_text/common.py


def get_config():
  config = base_config(method='lcm', network='sd_unet', dataset='digits_text')
  common.network(config, time_scale=250.0)  # The teacher's network, read through its EDM readout.
  config.network.guidance_embedding = 32
  common.training(config)
  config.method.update(teacher='runs/digits_text_edm', parameterization='edm', w_min=0.0, w_max=2.0, sample_w=1.0)
  config.eval.nfe = (1, 2, 4)
  return config

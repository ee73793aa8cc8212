"""Text-conditional EDM denoiser teacher on the captioned 8x8 digits: the tiny SD U-Net reading the caption's token
states by cross-attention, 10% of captions dropped to the empty caption's encoding for classifier-free guidance 2;
Heun on the Karras grid (70 NFE = 35 guided evaluations).

  python -m fewstep_jax.main --config=configs/digits_text/edm.py --workdir=runs/digits_text_edm
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/digits_text/common.py


def get_config():
  config = base_config(method='edm', network='sd_unet', dataset='digits_text')
  common.network(config, time_scale=250.0)  # c_noise = ln(sigma) / 4 spans about [-1.6, 1.1].
  common.training(config)
  config.method.update(label_dropout=0.1, guidance=2.0)
  config.eval.nfe = (2, 14, 30, 70)
  return config

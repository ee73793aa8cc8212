"""sCT (continuous-time consistency training, TrigFlow) on 2-D toy data, from scratch; 1, 2 and 4 NFE.

  python -m fewstep_jax.main --config=configs/toy/sct.py --workdir=runs/toy_sct

The paper starts from a pretrained diffusion model; here the tangent warmup (w = 0 -> 1 over the first 1000
steps) trains the diffusion target first, which is enough on 2-D data.
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/toy/common.py


def get_config():
  config = base_config(method='sct', network='mlp', dataset='toy')
  common.few_step(config, two_times=False)
  config.network.logvar_head = True
  # c_noise(tau) = tau enters the embedding unscaled: a large scale makes dF/dtau, and so the tangent, huge.
  config.network.time_scale = 1.0
  config.method.tangent_warmup_steps = 1000
  return config

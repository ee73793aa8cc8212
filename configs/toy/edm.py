"""EDM denoiser on 2-D toy data, MLP network; sampled with Heun on the Karras grid.

  python -m fewstep_jax.main --config=configs/toy/edm.py --workdir=runs/toy_edm
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='edm', network='mlp', dataset='toy')
  config.data.toy = '8gaussians'
  config.network.hidden = 256
  config.network.depth = 3
  # c_noise = ln(sigma) / 4 spans about [-1.6, 1.1]; this scale spreads it over the embedding frequencies.
  config.network.time_scale = 250.0
  config.train.num_steps = 4000
  config.train.batch_size = 256
  config.train.log_every = 200
  config.train.checkpoint_every = 2000
  config.optim.lr = 1e-3
  config.optim.schedule = 'cosine'
  config.optim.warmup_steps = 200
  config.optim.ema_rates = (0.999,)
  config.eval.params = 'ema_0.999'
  config.eval.nfe = (1, 3, 7, 15, 35)
  config.eval.num_samples = 2000
  return config

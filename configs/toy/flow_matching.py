"""Flow matching on 2-D toy data (8 gaussians by default), MLP velocity field. About a minute on a laptop CPU.

  python -m fewstep_jax.main --config=configs/toy/flow_matching.py --workdir=runs/toy_flow_matching \
      [--config.data.toy=moons|checkerboard|spirals]
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='flow_matching', network='mlp', dataset='toy')
  config.data.toy = '8gaussians'
  config.network.hidden = 256
  config.network.depth = 3
  config.method.time_sampler = 'uniform'
  config.method.solver = 'euler'
  config.train.num_steps = 4000
  config.train.batch_size = 256
  config.train.log_every = 200
  config.train.checkpoint_every = 2000
  config.optim.lr = 1e-3
  config.optim.schedule = 'cosine'
  config.optim.warmup_steps = 200
  config.optim.ema_rates = (0.999,)
  config.eval.params = 'ema_0.999'
  config.eval.nfe = (1, 2, 4, 8, 50)
  config.eval.num_samples = 2000
  return config

"""What the toy experiment files share: the few-step methods' setup, and the distillation methods' teacher network
and run. A config file reads this module with `config_base.load_sibling(__file__)`."""


def few_step(config, *, two_times: bool):
  """A 256-wide 3-layer MLP, 6000 steps of batch 256, Adam lr 1e-3 with 200 warmup steps and cosine decay, EMA
  0.999, evaluation at 1, 2 and 4 NFE on 2000 samples; `two_times` for flow-map networks."""
  config.network.update(hidden=256, depth=3, two_times=two_times)
  config.train.update(num_steps=6000, batch_size=256, log_every=200, checkpoint_every=2000)
  config.optim.update(lr=1e-3, schedule='cosine', warmup_steps=200, ema_rates=(0.999,))
  config.eval.update(params='ema_0.999', nfe=(1, 2, 4), num_samples=2000)
  return config


def distillation(config):
  """Score distillation from configs/toy/edm.py's run (runs/toy_edm) on its network: the student and the critic start
  from the teacher. 4000 steps of batch 256; both roles Adam lr 1e-4, betas (0, 0.99); student EMA 0.999; 1 NFE."""
  config.data.toy = '8gaussians'
  config.network.update(hidden=256, depth=3, time_scale=250.0)
  config.method.teacher = 'runs/toy_edm'
  config.train.update(num_steps=4000, batch_size=256, log_every=200, checkpoint_every=2000)
  config.optim.update(name='adam', lr=1e-4, b1=0.0, b2=0.99, ema_rates=(0.999,))
  config.method.critic_optim.update(name='adam', lr=1e-4, b1=0.0, b2=0.99)
  config.eval.update(params='ema_0.999', nfe=(1,), num_samples=2000)
  return config

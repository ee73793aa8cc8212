"""What the digits experiment files share: the few-step methods' setup, and the distillation methods' teacher
network and run. A config file reads this module with `config_base.load_sibling(__file__)`."""


def few_step(config, *, two_times: bool):
  """The teachers' 24-channel U-Net (1-2, one block per level, attention at 4 px), 2000 steps of batch 128, Adam
  lr 2e-3 with 200 warmup steps, cosine decay and gradient clipping at 1, EMA 0.999, evaluation at 1, 2 and 4 NFE
  on 1000 samples; `two_times` for flow-map networks."""
  config.network.update(channels=24, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
                        two_times=two_times)
  config.train.update(num_steps=2000, batch_size=128, log_every=100, checkpoint_every=1000)
  config.optim.update(lr=2e-3, schedule='cosine', warmup_steps=200, grad_clip=1.0, ema_rates=(0.999,))
  config.eval.update(params='ema_0.999', nfe=(1, 2, 4), num_samples=1000)
  return config


def distillation(config):
  """Score distillation from configs/digits/edm.py's run (runs/digits_edm, CFG 1.5 baked in) on its network: the
  student and the critic start from the teacher. 1000 steps of batch 128; both roles Adam lr 1e-4, betas (0, 0.99);
  student EMA 0.99 (at 0.999 a 1000-step run's average still holds a third of the teacher's weights); 1 NFE."""
  config.network.update(channels=24, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), time_scale=250.0)
  config.method.update(teacher='runs/digits_edm', teacher_guidance=1.5)
  config.train.update(num_steps=1000, batch_size=128, log_every=100, checkpoint_every=500)
  config.optim.update(name='adam', lr=1e-4, b1=0.0, b2=0.99, ema_rates=(0.99,))
  config.method.critic_optim.update(name='adam', lr=1e-4, b1=0.0, b2=0.99)
  config.eval.update(params='ema_0.99', nfe=(1,), num_samples=1000)
  return config

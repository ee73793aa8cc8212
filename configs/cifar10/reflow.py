"""2-RF++ on CIFAR-10 (Lee et al. 2024), for accelerators: reflow on pairs from an unconditional EDM teacher
(the paper generates 1M pairs with EDM's 35-NFE Heun sampler), U-shaped times (a = 4), pseudo-Huber distance
with c = 0.00054 dim (the official code's; the paper's best adds LPIPS, whose weights we do not ship), initialised from the teacher; batch 512,
Adam lr 2e-4 with 5000 warmup steps, EMA 0.9999, 800k steps, dropout 0.13. The student's network must equal
the teacher's (the paper wraps the EDM denoiser as a velocity model; here init_from needs a flow-matching run of
the same network, e.g. configs/cifar10/flow_matching.py with --config.data.conditional=False).

  python -m fewstep_jax.tools.generate_pairs --teacher=runs/cifar10_edm --out=data/pairs_cifar10 --num=1000000 --nfe=35
  python -m fewstep_jax.main --config=configs/cifar10/reflow.py --workdir=runs/cifar10_2rfpp \
      --config.data.pairs_dir=data/pairs_cifar10 --config.method.init_from=runs/cifar10_fm --config.mesh.data=8
"""
from fewstep_jax.config_base import base_config


def get_config():
  config = base_config(method='reflow', network='unet', dataset='reflow_pairs')
  config.data.pairs_dir = 'data/pairs_cifar10'
  config.network.channels = 128
  config.network.channel_mult = (2, 2, 2)
  config.network.num_res_blocks = 4
  config.network.attn_resolutions = (16,)
  config.network.dropout = 0.13
  config.method.time_sampler = 'u_shaped'
  config.method.distance = 'pseudo_huber'
  config.method.label_dropout = 0.0
  config.train.num_steps = 800_000
  config.train.batch_size = 512
  config.train.log_every = 100
  config.train.checkpoint_every = 10_000
  config.train.sample_every = 50_000
  config.optim.name = 'adam'
  config.optim.lr = 2e-4
  config.optim.schedule = 'warmup'
  config.optim.warmup_steps = 5000
  config.optim.ema_rates = (0.9999,)
  config.eval.params = 'ema_0.9999'
  config.eval.nfe = (1, 2)
  config.eval.at_end = False
  return config

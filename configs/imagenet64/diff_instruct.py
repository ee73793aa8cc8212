"""Diff-Instruct (Luo et al. 2023) on ImageNet-64 from the class-conditional EDM teacher, 1 NFE: the unnormalised
matching gradient at log-normal levels from sigma_init 1; Adam lr 1e-5, betas (0, 0.999), 1:1 updates (the official
code's CIFAR-10 settings; it publishes no ImageNet-64 run).

  python -m fewstep_jax.main --config=configs/imagenet64/diff_instruct.py --workdir=runs/imagenet64_diff_instruct \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.teacher=runs/imagenet64_edm
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/imagenet64/common.py


def get_config():
  config = base_config(method='diff_instruct', network='unet', dataset='tfds')
  common.accelerator_run(config)
  config.network.update(common.EDM_UNET)
  # SiD / SIM / Diff-Instruct: Adam lr 1e-5, betas (0, 0.999), 1:1 updates, critic first, batch 256, EMA 0.9999.
  config.method.update(teacher='runs/imagenet64_edm')
  config.method.critic_optim.update(b1=0.0, lr=1e-5)
  config.train.update(batch_size=280, num_steps=400_000)
  config.optim.update(b1=0.0, ema_rates=(0.9999,), lr=1e-5)
  config.eval.update(nfe=(1,), params='ema_0.9999')
  return config

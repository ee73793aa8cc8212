"""Diff-Instruct (Luo et al. 2023) on unconditional CIFAR-10 from EDM's published unconditional teacher
(edm-cifar10-32x32-uncond-vp.pkl, DDPM++, as the official di_train.py's), 1 NFE: the unnormalised
matching gradient at log-normal levels from sigma_init 1; as the official README's command: Adam lr 1e-5, betas
(0, 0.999), batch 128, 1:1 updates, critic first, EMA half-life 0.5 Mimg.

  python -m fewstep_jax.main --config=configs/cifar10/diff_instruct.py --workdir=runs/cifar10_diff_instruct \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8
  (after python -m fewstep_jax.tools.import_checkpoint --src=edm-cifar10-32x32-uncond-vp.pkl --out=teachers/edm_cifar10_uncond)
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/cifar10/common.py


def get_config():
  config = base_config(method='diff_instruct', network='edm_songunet', dataset='tfds')
  common.accelerator_run(config)
  config.data.update(conditional=False)
  config.network.update(common.EDM_DDPMPP)
  # SiD / SIM / Diff-Instruct: Adam lr 1e-5, betas (0, 0.999), 1:1 updates, critic first, batch 256, EMA 0.9999.
  # Diff-Instruct (pkulwj1994/diff_instruct, README): unconditional, batch 128, EMA half-life
  # 0.5 Mimg (0.99982).
  config.method.update(teacher=common.EDM_TEACHER[False])
  config.method.critic_optim.update(b1=0.0, lr=1e-5)
  config.train.update(num_steps=400_000)
  config.optim.update(b1=0.0, ema_rates=(0.99982,), lr=1e-5)
  config.eval.update(nfe=(1,), params='ema_0.99982')
  return config

"""SiD (Zhou et al. 2024) on CIFAR-10 from the class-conditional EDM teacher, 1 NFE; reference FID 1.710
(class-conditional; 1.923 unconditional: --config.data.conditional=False --config.train.num_steps=1953125 with the
unconditional teacher teachers/edm_cifar10_uncond, 500 Mimg in the official run_sid.sh). The teacher is EDM's
published edm-cifar10-32x32-cond-vp.pkl (DDPM++), as the official sid_train.py's; generator and fake score start
from its weights.
alpha 1.2, sigma_init 2.5, t_max 0.8, Adam lr 1e-5, betas (0, 0.999), batch 256, 1:1 updates, critic first,
800 Mimg (3.125M steps), EMA half-life 0.5 Mimg.

  python -m fewstep_jax.main --config=configs/cifar10/sid.py --workdir=runs/cifar10_sid \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8
  (after python -m fewstep_jax.tools.import_checkpoint --src=edm-cifar10-32x32-cond-vp.pkl --out=teachers/edm_cifar10_cond)
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/cifar10/common.py


def get_config():
  config = base_config(method='sid', network='edm_songunet', dataset='tfds')
  common.accelerator_run(config)
  config.network.update(common.EDM_DDPMPP)
  # SiD / SIM / Diff-Instruct: Adam lr 1e-5, betas (0, 0.999), 1:1 updates, critic first, batch 256, EMA 0.9999.
  # SiD (mingyuanzhou/SiD, run_sid.sh): conditional, alpha 1.2, 800 Mimg (3.125M steps of 256), EMA
  # half-life 0.5 Mimg (0.5^(256 / 0.5e6) = 0.99965 per step).
  config.method.update(teacher=common.EDM_TEACHER[True])
  config.method.critic_optim.update(b1=0.0, lr=1e-5)
  config.train.update(batch_size=256, num_steps=3_125_000)
  config.optim.update(b1=0.0, ema_rates=(0.99965,), lr=1e-5)
  config.eval.update(nfe=(1,), params='ema_0.99965')
  return config

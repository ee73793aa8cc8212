"""SIM (Luo et al. 2024) on CIFAR-10 from the class-conditional EDM teacher, 1 NFE; reference FID 1.96
(class-conditional; 2.06 unconditional). Pseudo-Huber distance, Adam lr 1e-5, betas (0, 0.999), 1:1 updates.
The teacher is EDM's published edm-cifar10-32x32-cond-vp.pkl (DDPM++), as the paper states it follows SiD (SIM's
official code releases no CIFAR-10 training).

  python -m fewstep_jax.main --config=configs/cifar10/sim.py --workdir=runs/cifar10_sim \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8
  (after python -m fewstep_jax.tools.import_checkpoint --src=edm-cifar10-32x32-cond-vp.pkl --out=teachers/edm_cifar10_cond)
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/cifar10/common.py


def get_config():
  config = base_config(method='sim', network='edm_songunet', dataset='tfds')
  common.accelerator_run(config)
  config.network.update(common.EDM_DDPMPP)
  # SiD / SIM / Diff-Instruct: Adam lr 1e-5, betas (0, 0.999), 1:1 updates, critic first, batch 256, EMA 0.9999.
  config.method.update(teacher=common.EDM_TEACHER[True])
  config.method.critic_optim.update(b1=0.0, lr=1e-5)
  config.train.update(batch_size=256, num_steps=400_000)
  config.optim.update(b1=0.0, ema_rates=(0.9999,), lr=1e-5)
  config.eval.update(nfe=(1,), params='ema_0.9999')
  return config

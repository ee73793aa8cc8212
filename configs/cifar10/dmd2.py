"""DMD2 (Yin et al. 2024) on CIFAR-10 from the class-conditional EDM teacher, 1 NFE: the paper reports no CIFAR-10
run, so this is its ImageNet-64 recipe (AdamW lr 2e-6 for both roles, GAN head at 1e-2 / 3e-3, critic every step
and student every 5th, no EMA) on the CIFAR-10 teacher.

  python -m fewstep_jax.main --config=configs/cifar10/dmd2.py --workdir=runs/cifar10_dmd2 \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.teacher=runs/cifar10_edm
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/cifar10/common.py

# DMD2's optimizer, the same for the student and the critic (tianweiy/DMD2 main/edm/train_edm.py).
DMD_OPTIM = dict(name='adamw', lr=2e-6, b1=0.9, b2=0.999, weight_decay=0.01, schedule='warmup', warmup_steps=500,
                 grad_clip=10.0)


def get_config():
  config = base_config(method='dmd2', network='unet', dataset='tfds')
  common.accelerator_run(config)
  config.network.update(common.EDM_UNET)
  # DMD2 (tianweiy/DMD2, experiments/imagenet/*.sh and main/edm/train_edm.py): AdamW lr 2e-6 for both roles,
  # betas (0.9, 0.999), weight decay 0.01, 500 warmup steps, clipping at 10, batch 280, no EMA (the raw
  # generator is evaluated).
  # The GAN head at 1e-2 (critic side) and 3e-3 (generator side); critic every step, student every 5th.
  # DMD2 reports no CIFAR-10 run: these are its ImageNet-64 settings, transferred.
  config.method.update(gan_generator_weight=0.003, gan_weight=0.01, teacher='runs/cifar10_edm')
  config.method.critic_optim.update(DMD_OPTIM)
  config.train.update(batch_size=256, num_steps=400_000)
  config.optim.update(DMD_OPTIM, ema_rates=())
  config.eval.update(nfe=(1,), params='params')
  return config

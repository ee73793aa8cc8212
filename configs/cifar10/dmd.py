"""DMD (Yin et al. 2023) on CIFAR-10 from the class-conditional EDM teacher, 1 NFE: 1:1 updates and the LPIPS
regression loss (weight 0.25) on teacher ODE pairs generated once.

  python -m fewstep_jax.tools.generate_pairs --teacher=runs/cifar10_edm --out=runs/cifar10_edm_pairs --num=100000 --nfe=35
  python -m fewstep_jax.main --config=configs/cifar10/dmd.py --workdir=runs/cifar10_dmd \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.teacher=runs/cifar10_edm \
      --config.method.lpips_weights=/path/to/lpips_vgg16.npz
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/cifar10/common.py

# DMD2's optimizer, the same for the student and the critic (tianweiy/DMD2 main/edm/train_edm.py).
DMD_OPTIM = dict(name='adamw', lr=2e-6, b1=0.9, b2=0.999, weight_decay=0.01, schedule='warmup', warmup_steps=500,
                 grad_clip=10.0)


def get_config():
  config = base_config(method='dmd', network='unet', dataset='tfds')
  common.accelerator_run(config)
  config.network.update(common.EDM_UNET)
  # DMD2 (tianweiy/DMD2, experiments/imagenet/*.sh and main/edm/train_edm.py): AdamW lr 2e-6 for both roles,
  # betas (0.9, 0.999), weight decay 0.01, 500 warmup steps, clipping at 10, batch 280, no EMA (the raw
  # generator is evaluated).
  # DMD's regression loss with LPIPS on teacher ODE pairs stored once (python -m fewstep_jax.tools.generate_pairs).
  # DMD reports no CIFAR-10 distillation of this teacher: its ImageNet-64 settings, transferred.
  config.method.update(regression_distance='lpips', regression_pairs='runs/cifar10_edm_pairs',
                        teacher='runs/cifar10_edm')
  config.method.critic_optim.update(DMD_OPTIM)
  config.train.update(batch_size=256, num_steps=400_000)
  config.optim.update(DMD_OPTIM, ema_rates=())
  config.eval.update(nfe=(1,), params='params')
  return config

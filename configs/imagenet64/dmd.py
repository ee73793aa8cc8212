"""DMD (Yin et al. 2023) on ImageNet-64 from the class-conditional EDM teacher, 1 NFE; reference FID 2.62. 1:1
updates and the LPIPS regression loss (weight 0.25) on teacher ODE pairs generated once.

  python -m fewstep_jax.tools.generate_pairs --teacher=runs/imagenet64_edm --out=runs/imagenet64_edm_pairs --num=25000 --nfe=79
  python -m fewstep_jax.main --config=configs/imagenet64/dmd.py --workdir=runs/imagenet64_dmd \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.teacher=runs/imagenet64_edm \
      --config.method.lpips_weights=/path/to/lpips_vgg16.npz
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/imagenet64/common.py

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
  config.method.update(regression_distance='lpips', regression_pairs='runs/imagenet64_edm_pairs',
                        teacher='runs/imagenet64_edm')
  config.method.critic_optim.update(DMD_OPTIM)
  config.train.update(batch_size=280, num_steps=400_000)
  config.optim.update(DMD_OPTIM, ema_rates=())
  config.eval.update(nfe=(1,), params='params')
  return config

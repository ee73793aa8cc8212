"""DMD2 (Yin et al. 2024) on ImageNet-64 from the class-conditional EDM teacher, 1 NFE, in one run with the GAN
from the start (reference FID 1.51; the headline 1.28 resumes a run without GAN, 2.61, with the GAN at lr 5e-7:
--config.method.gan_weight=0 --config.method.gan_generator_weight=0 first). AdamW lr 2e-6 for both roles, betas
(0.9, 0.999), weight decay 0.01, warmup 500, clipping at 10, batch 280, no EMA (the raw generator is
evaluated); critic every step, student every 5th. The teacher is EDM's published edm-imagenet-64x64-cond-adm.pkl
(ADM), as the official experiments/imagenet scripts'.

  python -m fewstep_jax.main --config=configs/imagenet64/dmd2.py --workdir=runs/imagenet64_dmd2 \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8
  (after python -m fewstep_jax.tools.import_checkpoint --src=edm-imagenet-64x64-cond-adm.pkl --out=teachers/edm_imagenet64_cond)
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/imagenet64/common.py

# DMD2's optimizer, the same for the student and the critic (tianweiy/DMD2 main/edm/train_edm.py).
DMD_OPTIM = dict(name='adamw', lr=2e-6, b1=0.9, b2=0.999, weight_decay=0.01, schedule='warmup', warmup_steps=500,
                 grad_clip=10.0)


def get_config():
  config = base_config(method='dmd2', network='edm_dhariwalunet', dataset='tfds')
  common.accelerator_run(config)
  config.network.update(common.EDM_ADM)
  # DMD2 (tianweiy/DMD2, experiments/imagenet/*.sh and main/edm/train_edm.py): AdamW lr 2e-6 for both roles,
  # betas (0.9, 0.999), weight decay 0.01, 500 warmup steps, clipping at 10, batch 280, no EMA (the raw
  # generator is evaluated).
  # The GAN head at 1e-2 (critic side) and 3e-3 (generator side); critic every step, student every 5th.
  config.method.update(gan_generator_weight=0.003, gan_weight=0.01, teacher=common.EDM_TEACHER)
  config.method.critic_optim.update(DMD_OPTIM)
  config.train.update(batch_size=280, num_steps=400_000)
  config.optim.update(DMD_OPTIM, ema_rates=())
  config.eval.update(nfe=(1,), params='params')
  return config

"""f-distill (Xu et al. 2025) on ImageNet-64 from the class-conditional EDM teacher, 1 NFE, with the Jensen-Shannon
weighting; paper FID 1.16 (its ImageNet-64 comparison table; FastGen's run 1.11).

  python -m fewstep_jax.main --config=configs/imagenet64/f_distill.py --workdir=runs/imagenet64_f_distill \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.teacher=runs/imagenet64_edm
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/imagenet64/common.py

# FastGen's optimizer for all three roles at ImageNet-64's lr (fastgen/configs/opt.py BaseOptimizerConfig).
F_DISTILL_OPTIM = dict(name='adamw', lr=2e-6, b1=0.9, b2=0.999, weight_decay=0.01, schedule='constant')


def get_config():
  config = base_config(method='f_distill', network='unet', dataset='tfds')
  common.accelerator_run(config)
  config.network.update(common.EDM_UNET)
  # NVlabs/FastGen fastgen/configs/experiments/EDM/config_f_distill_in64.py over config_f_distill.py and
  # config_dmd2.py: Jensen-Shannon, ratio clip [0.1, 20], 10 bins with running mean 0.5, the generator's GAN
  # weight 3e-3, the student every 5th step, AdamW lr 2e-6 for every role, generator gradients clipped at 10, EMA
  # 0.9999 / 0.99995 / 0.9996, batch 512 for 600k iterations.
  config.method.update(divergence='js', ratio_ema=0.5, gan_generator_weight=3e-3, teacher='runs/imagenet64_edm')
  config.method.critic_optim.update(F_DISTILL_OPTIM)
  config.train.update(batch_size=512, num_steps=600_000)
  config.optim.update(F_DISTILL_OPTIM, grad_clip=10.0, ema_rates=(0.9999, 0.99995, 0.9996))
  config.eval.update(nfe=(1,), params='ema_0.9999')
  return config

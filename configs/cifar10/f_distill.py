"""f-distill (Xu et al. 2025) on class-conditional CIFAR-10 from the class-conditional EDM teacher, 1 NFE, with the
forward-KL weighting; paper FID 1.92 (its CIFAR-10 comparison table; FastGen's run 1.85).

  python -m fewstep_jax.main --config=configs/cifar10/f_distill.py --workdir=runs/cifar10_f_distill \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.teacher=runs/cifar10_edm
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/cifar10/common.py

# FastGen's optimizer for all three roles (fastgen/configs/opt.py BaseOptimizerConfig, no warmup).
F_DISTILL_OPTIM = dict(name='adamw', lr=1e-4, b1=0.9, b2=0.999, weight_decay=0.01, schedule='constant')


def get_config():
  config = base_config(method='f_distill', network='unet', dataset='tfds')
  common.accelerator_run(config)
  config.network.update(common.EDM_UNET)
  # NVlabs/FastGen fastgen/configs/experiments/EDM/config_f_distill_cifar10.py over config_f_distill.py and
  # config_dmd2.py: forward KL, ratio clip [0.1, 20] and 10 bins without running mean, the generator's GAN weight
  # 1e-3, the student every 5th step, AdamW lr 1e-4 for every role, generator gradients clipped at 10, EMA
  # 0.9999 / 0.99995 / 0.9996, batch 2048 for 100k iterations.
  config.method.update(divergence='kl', ratio_ema=0.0, gan_generator_weight=1e-3, teacher='runs/cifar10_edm')
  config.method.critic_optim.update(F_DISTILL_OPTIM)
  config.train.update(batch_size=2048, num_steps=100_000)
  config.optim.update(F_DISTILL_OPTIM, grad_clip=10.0, ema_rates=(0.9999, 0.99995, 0.9996))
  config.eval.update(nfe=(1,), params='ema_0.9999')
  return config

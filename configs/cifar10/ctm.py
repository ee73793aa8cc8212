"""CTM (consistency trajectory models, Kim et al. 2024) on class-conditional CIFAR-10 from the class-conditional EDM
teacher, for accelerators: CTM + DSM for 50k steps, then with the GAN term (the official README's 10-50k, then
>= 30k with the GAN); the paper's 1-NFE FID 1.73. One run here: the GAN stage keeps the first stage's batch (the
official resumes it at batch 528) and its discriminator reads the teacher's bottleneck (methods/ctm.py).

  python -m fewstep_jax.main --config=configs/cifar10/ctm.py --workdir=runs/cifar10_ctm \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.teacher=runs/cifar10_edm \
      --config.method.lpips_weights=/path/to/lpips_vgg16.npz
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/cifar10/common.py


def get_config():
  config = base_config(method='ctm', network='unet', dataset='tfds')
  common.accelerator_run(config)
  # Dropout 0.13: the official CIFAR-10 code's SongUNet default (cm/networks.py), which its EDMPrecond_CTM keeps.
  config.network.update(common.EDM_UNET, two_times=True, dropout=0.13)
  # Kim-Dongjun/ctm-cifar10 commands (the cond CTM + DSM run): N = 18, up to 17 Heun steps (p(k) ∝ k), LPIPS,
  # target EMA 0.999, lambda_DSM 1 with the adaptive weight computed per micro-batch of 16, RAdam lr 4e-4,
  # batch 256, saved EMAs 0.999 / 0.9999.
  config.method.update(num_scales=18, heun_steps=17, distance='lpips', target_ema=0.999, dsm_weight=1.0,
                        adaptive_group=16, gan_weight=1.0, gan_start=50_000, teacher='runs/cifar10_edm')
  config.train.update(batch_size=256, num_steps=100_000)
  config.optim.update(ema_rates=(0.999, 0.9999), lr=4e-4, name='radam')
  config.eval.update(nfe=(1, 2), params='ema_0.9999')
  return config

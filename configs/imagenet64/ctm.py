"""CTM (consistency trajectory models, Kim et al. 2024) on class-conditional ImageNet-64 from the consistency-models
code's EDM teacher `edm_imagenet64_ema.pt`, as sony/ctm's ImageNet-64 commands, for accelerators: CTM + DSM for 50k
steps, then with the GAN term; the paper's FID 1.92 / 1.73 at 1 / 2 NFE. The student is the teacher's U-Net with
CTM's second time s (its code/cm/unet.py), starting from the teacher's weights. One run here: the GAN stage keeps
the first stage's batch, lr and Heun steps (the official resumes it at batch 4224, lr 8e-6, at most 20 Heun steps)
and its discriminator reads the teacher's bottleneck (methods/ctm.py).

  python -m fewstep_jax.tools.import_checkpoint --src=edm_imagenet64_ema.pt --arch=cm_imagenet64 --out=teachers/cm_imagenet64
  python -m fewstep_jax.main --config=configs/imagenet64/ctm.py --workdir=runs/imagenet64_ctm \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 \
      --config.method.lpips_weights=/path/to/lpips_vgg16.npz
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/imagenet64/common.py


def get_config():
  config = base_config(method='ctm', network='cm_unet', dataset='tfds')
  common.accelerator_run(config)
  # sony/ctm code/cm/script_util.py's ImageNet-64 network (CM's teacher's, dropout 0.0) with the s embedding.
  config.network.update(common.CM_UNET, dropout=0.0, two_times=True)
  # sony/ctm code/commands (ImageNet-64 CTM + DSM): N = 40, up to 39 Heun steps (p(k) ∝ k), LPIPS, target EMA
  # 0.999, lambda_DSM 1 with the adaptive weight computed per micro-batch of 18 (--microbatch=18), RAdam lr 4e-4,
  # batch 1440, saved EMAs 0.999 / 0.9999 / 0.9999432.
  config.method.update(num_scales=40, heun_steps=39, distance='lpips', target_ema=0.999, dsm_weight=1.0,
                        adaptive_group=18, gan_weight=1.0, gan_start=50_000, teacher=common.CM_TEACHER)
  config.train.update(batch_size=1440, num_steps=100_000)
  config.optim.update(ema_rates=(0.999, 0.9999, 0.9999432), lr=4e-4, name='radam')
  config.eval.update(nfe=(1, 2), params='ema_0.999943')
  return config

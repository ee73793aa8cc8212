"""CD (consistency distillation, LPIPS) on class-conditional ImageNet-64 from the consistency-models code's own EDM
teacher, `edm_imagenet64_ema.pt`, as its scripts/launch.sh ("L_CD^N (LPIPS) on ImageNet-64"); reference FID
(1 / 2 NFE): 6.20 / 4.70 (CM, Table 2; RAdam lr 8e-6, batch 2048, mu 0.95, N = 40, EMA 0.999943 from its Table 3;
the student starts from the teacher).

  python -m fewstep_jax.tools.import_checkpoint --src=edm_imagenet64_ema.pt --arch=cm_imagenet64 --out=teachers/cm_imagenet64
  python -m fewstep_jax.main --config=configs/imagenet64/cd.py --workdir=runs/imagenet64_cd \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 \
      --config.method.lpips_weights=/path/to/lpips_vgg16.npz
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/imagenet64/common.py


def get_config():
  config = base_config(method='cd', network='cm_unet', dataset='tfds')
  common.accelerator_run(config)
  # The teacher's UNetModel; the student trains without dropout (--dropout 0.0; the teacher's 0.1 is inactive in
  # its eval mode).
  config.network.update(common.CM_UNET, dropout=0.0)
  # CM (Song et al. 2023), Table 3, and scripts/launch.sh: batch 2048, RAdam lr 8e-6, EMA 0.999943, target
  # mu = 0.95, LPIPS, 40 grid points, from the teacher's weights; the 2-step level 1.382 is `--ts 0,22,39`.
  config.method.update(distance='lpips', init_from=common.CM_TEACHER, num_scales=40, sample_sigmas=(1.382,),
                       teacher=common.CM_TEACHER)
  config.train.update(batch_size=2048, num_steps=600_000)
  config.optim.update(ema_rates=(0.999943,), lr=8e-6, name='radam')
  config.eval.update(nfe=(1, 2), params='ema_0.999943')
  return config

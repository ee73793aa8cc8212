"""Multistep consistency distillation (Heek et al. 2024) on ImageNet-64 from the class-conditional EDM teacher, for
accelerators: 8 segments, 8 NFE; reference FID 1.4 (the paper's Table 1, Large model, distilled from the authors'
own diffusion model, which is not public; this config distils the codebase's EDM teacher).

  python -m fewstep_jax.main --config=configs/imagenet64/multistep_cd.py --workdir=runs/imagenet64_multistep_cd \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.teacher=runs/imagenet64_edm
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/imagenet64/common.py


def get_config():
  config = base_config(method='multistep_cd', network='unet', dataset='tfds')
  common.accelerator_run(config)
  config.network.update(common.EDM_UNET)
  # The paper's App. A.1: batch 2048 for 200k steps from the pretrained model, the teacher steps annealed
  # 64 -> 1280 over 100k, v-loss weight, the un-squared L2 (Huber, epsilon 1e-4), theta- = sg(theta). Not the
  # paper's: the optimizer (not given for these runs) is CM's RAdam at CD's lr, with CD's EMA.
  config.method.update(segments=8, anneal_steps=100_000, s0=64, s1=1280, huber_c=1e-4,
                        teacher='runs/imagenet64_edm', init_from='runs/imagenet64_edm')
  config.train.update(batch_size=2048, num_steps=200_000)
  config.optim.update(ema_rates=(0.999943,), lr=8e-6, name='radam')
  config.eval.update(nfe=(8,), params='ema_0.999943')
  return config

"""TDM (Luo et al. 2025) on ImageNet-64 from the class-conditional EDM teacher, 4 NFE: a 4-stage deterministic
student, its learning rate a fifth of the critic's. The paper distils text-to-image models only; the rest of this
recipe is this codebase's.

  python -m fewstep_jax.main --config=configs/imagenet64/tdm.py --workdir=runs/imagenet64_tdm \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.teacher=runs/imagenet64_edm
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/imagenet64/common.py


def get_config():
  config = base_config(method='tdm', network='unet', dataset='tfds')
  common.accelerator_run(config)
  config.network.update(common.EDM_UNET)
  # SiD / SIM / Diff-Instruct: Adam lr 1e-5, betas (0, 0.999), 1:1 updates, critic first, batch 256, EMA 0.9999.
  # TDM: the student at a fifth of the critic's lr (its official code is text-to-image only; the rest is
  # this codebase's).
  config.method.update(teacher='runs/imagenet64_edm')
  config.method.critic_optim.update(b1=0.0, lr=1e-5)
  config.train.update(batch_size=280, num_steps=400_000)
  config.optim.update(b1=0.0, ema_rates=(0.9999,), lr=2e-6)
  config.eval.update(nfe=(1, 2, 4), params='ema_0.9999')
  return config

"""sCD on unconditional CIFAR-10 from the unconditional EDM teacher (configs/cifar10/edm.py with
--config.data.conditional=False), converted exactly to TrigFlow, for accelerators; no dropout (sCM appendix G.2).
The sCM paper reports no CIFAR-10 sCD figure. Student settings: `config_base.SCM_RECIPES['cifar10']`.

  python -m fewstep_jax.main --config=configs/cifar10/scd.py --workdir=runs/cifar10_scd \
      --config.data.dir=/path/to/tensorflow_datasets --config.method.teacher=runs/cifar10_edm_uncond
"""
from fewstep_jax.config_base import base_config, scm_recipe


def get_config():
  config = base_config(method='scd', network='unet', dataset='tfds')
  scm_recipe(config, 'cifar10')
  config.method.teacher = 'runs/cifar10_edm_uncond'
  config.network.dropout = 0.0
  return config

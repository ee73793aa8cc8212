"""sCD on CIFAR-10 from the CIFAR-10 EDM teacher (configs/cifar10/edm.py), converted exactly to TrigFlow, for
accelerators. Student settings: `config_base.SCM_RECIPES['cifar10']`.

  python -m fewstep_jax.main --config=configs/cifar10/scd.py --workdir=runs/cifar10_scd \
      --config.data.dir=/path/to/tensorflow_datasets --config.method.teacher=runs/cifar10_edm
"""
from fewstep_jax.config_base import base_config, scm_recipe


def get_config():
  config = base_config(method='scd', network='unet', dataset='tfds')
  scm_recipe(config, 'cifar10')
  config.method.teacher = 'runs/cifar10_edm'
  return config

"""sCT on unconditional CIFAR-10 (U-Net with a log-variance head), for accelerators; reference 2.85 / 2.06 FID at
1 / 2 NFE (sCM, ICLR 2025, Table 1; arXiv v1 gave 2.97). Settings: `config_base.SCM_RECIPES['cifar10']`.

  python -m fewstep_jax.main --config=configs/cifar10/sct.py --workdir=runs/cifar10_sct \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 [--config.method.init_from=RUN]

The paper initialises from a pretrained TrigFlow diffusion model: pass one as `init_from` (same network config);
without it the run starts from scratch and the tangent warmup trains the diffusion target first.
"""
from fewstep_jax.config_base import base_config, scm_recipe


def get_config():
  config = base_config(method='sct', network='unet', dataset='tfds')
  scm_recipe(config, 'cifar10')
  return config

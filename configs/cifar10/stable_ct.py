"""SCT (stable consistency tuning, Wang et al. 2024) on unconditional CIFAR-10 from the unconditional EDM teacher, for
accelerators: configs/cifar10/ect.py's settings with the variance-reduced target point over the batch. Reference
FID (1 / 2 NFE): 3.11 / 2.05 (the paper's Table 2, as a secondary extraction of it gives them; no official code
or configs are public, so the settings are ECT's).

  python -m fewstep_jax.main --config=configs/cifar10/stable_ct.py --workdir=runs/cifar10_stable_ct \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 \
      --config.method.init_from=runs/cifar10_edm_uncond
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/cifar10/common.py


def get_config():
  config = base_config(method='stable_ct', network='unet', dataset='tfds')
  common.accelerator_run(config)
  config.data.update(conditional=False)
  config.network.update(common.EDM_UNET, dropout=0.2)
  # ECT's CIFAR-10 setup (locuslab/ect run_ecm.sh): batch 128, RAdam lr 1e-4, dropout 0.2, EMA 0.9999, a stage
  # per 25k steps; the reference set of the variance-reduced target is the batch.
  config.method.update(init_from='runs/cifar10_edm_uncond')
  config.train.update(num_steps=400_000)
  config.optim.update(ema_rates=(0.9999,), lr=1e-4, name='radam')
  config.eval.update(nfe=(1, 2), params='ema_0.9999')
  return config

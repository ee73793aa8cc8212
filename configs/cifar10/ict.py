"""iCT (improved consistency training, from scratch) on unconditional CIFAR-10, for accelerators; reference FID
(1 / 2 NFE): 2.83 / 2.46.

  python -m fewstep_jax.main --config=configs/cifar10/ict.py --workdir=runs/cifar10_ict \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/cifar10/common.py


def get_config():
  config = base_config(method='ict', network='unet', dataset='tfds')
  common.accelerator_run(config)
  config.data.update(conditional=False)
  config.network.update(common.EDM_UNET, dropout=0.3)
  # iCT (Song & Dhariwal 2023), CIFAR-10 setup (unconditional): batch 1024, RAdam lr 1e-4, dropout 0.3,
  # EMA 0.99993, N(k) doubling from 11 to 1281 points (the method's other defaults are iCT's).
  config.train.update(batch_size=1024, num_steps=400_000)
  config.optim.update(ema_rates=(0.99993,), lr=1e-4, name='radam')
  config.eval.update(nfe=(1, 2), params='ema_0.99993')
  return config

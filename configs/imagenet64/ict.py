"""iCT (improved consistency training, from scratch) on ImageNet-64, for accelerators; reference FID (1 / 2 NFE):
4.02 / 3.20 (iCT at this network's size; iCT-deep, twice as deep, 3.25 / 2.77).

  python -m fewstep_jax.main --config=configs/imagenet64/ict.py --workdir=runs/imagenet64_ict \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/imagenet64/common.py


def get_config():
  config = base_config(method='ict', network='unet', dataset='tfds')
  common.accelerator_run(config)
  config.network.update(common.EDM_UNET, dropout=0.2)
  # iCT (Song & Dhariwal 2023), ImageNet-64 setup: batch 4096, RAdam lr 1e-4, dropout 0.2, EMA 0.99997.
  config.train.update(batch_size=4096, num_steps=800_000)
  config.optim.update(ema_rates=(0.99997,), lr=1e-4, name='radam')
  config.eval.update(nfe=(1, 2), params='ema_0.99997')
  return config

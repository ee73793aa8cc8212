"""CT (consistency training, LPIPS, CM's curricula) on ImageNet-64, for accelerators; reference FID (1 / 2 NFE):
13.0 / 11.1 (CM, Table 2; RAdam lr 8e-6, batch 2048, mu0 0.95, s1 200, EMA 0.999943 from its Table 3).


  python -m fewstep_jax.main --config=configs/imagenet64/ct.py --workdir=runs/imagenet64_ct \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 \
      --config.method.lpips_weights=/path/to/lpips_vgg16.npz
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/imagenet64/common.py


def get_config():
  config = base_config(method='ct', network='unet', dataset='tfds')
  common.accelerator_run(config)
  config.network.update(common.EDM_UNET)
  # CM (Song et al. 2023), Table 3: batch 2048, RAdam lr 8e-6, EMA 0.999943, N(k) to s1 = 200, target
  # mu0 = 0.95, LPIPS; the 2-step level 1.913 is the official scripts/launch.sh `--ts 0,106,200`.
  config.method.update(distance='lpips', mu0=0.95, s1=200, sample_sigmas=(1.913,))
  config.train.update(batch_size=2048, num_steps=800_000)
  config.optim.update(ema_rates=(0.999943,), lr=8e-6, name='radam')
  config.eval.update(nfe=(1, 2), params='ema_0.999943')
  return config

"""ECT (easy consistency tuning of the unconditional EDM teacher) on unconditional CIFAR-10, for accelerators;
reference FID (1 / 2 NFE): 3.60 / 2.11. It starts from EDM's published edm-cifar10-32x32-uncond-vp.pkl (DDPM++), as
the official run_ecm.sh's --transfer.

  python -m fewstep_jax.tools.import_checkpoint --src=edm-cifar10-32x32-uncond-vp.pkl --out=teachers/edm_cifar10_uncond
  python -m fewstep_jax.main --config=configs/cifar10/ect.py --workdir=runs/cifar10_ect \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/cifar10/common.py


def get_config():
  config = base_config(method='ect', network='edm_songunet', dataset='tfds')
  common.accelerator_run(config)
  config.data.update(conditional=False)
  config.network.update(common.EDM_DDPMPP, dropout=0.2)
  # ECT (Geng et al. 2024), CIFAR-10 setup (unconditional): batch 128, RAdam lr 1e-4, dropout 0.2,
  # EMA 0.9999, a stage per 25k steps, from the EDM teacher's weights.
  config.method.update(init_from=common.EDM_TEACHER[False])
  config.train.update(num_steps=400_000)
  config.optim.update(ema_rates=(0.9999,), lr=1e-4, name='radam')
  config.eval.update(nfe=(1, 2), params='ema_0.9999')
  return config

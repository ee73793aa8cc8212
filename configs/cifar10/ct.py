"""CT (consistency training, LPIPS, CM's curricula) on unconditional CIFAR-10, for accelerators; reference FID
(1 / 2 NFE): 8.70 / 5.83 (CM, Table 1; RAdam lr 4e-4, batch 512, mu0 0.9, s0 2, s1 150 from its Table 3).


  python -m fewstep_jax.main --config=configs/cifar10/ct.py --workdir=runs/cifar10_ct \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 \
      --config.method.lpips_weights=/path/to/lpips_vgg16.npz
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/cifar10/common.py


def get_config():
  config = base_config(method='ct', network='unet', dataset='tfds')
  common.accelerator_run(config)
  config.data.update(conditional=False)
  config.network.update(common.EDM_UNET)
  # CM (Song et al. 2023), Table 3 and appendix C (unconditional): RAdam lr 4e-4 without warmup or decay,
  # batch 512, EMA 0.9999, N(k) from s0 = 2 to s1 + 1 = 151 points, target mu0 = 0.9, LPIPS.
  config.method.update(distance='lpips')
  config.train.update(batch_size=512, num_steps=800_000)
  config.optim.update(ema_rates=(0.9999,), lr=4e-4, name='radam')
  config.eval.update(nfe=(1, 2), params='ema_0.9999')
  return config

"""SiD (Zhou et al. 2024) on ImageNet-64 from the class-conditional EDM teacher, 1 NFE; reference FID 1.524. The
teacher is EDM's published edm-imagenet-64x64-cond-adm.pkl (ADM), as the official sid_train.py's.
alpha 1.2, sigma_init 2.5, t_max 0.8, Adam betas (0, 0.999), 1:1 updates, critic first; as the official
run_sid.sh ImageNet-64 run: lr 4e-6 for both roles, batch 8192, 1000 Mimg (122k steps), EMA half-life 2 Mimg.

  python -m fewstep_jax.main --config=configs/imagenet64/sid.py --workdir=runs/imagenet64_sid \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8
  (after python -m fewstep_jax.tools.import_checkpoint --src=edm-imagenet-64x64-cond-adm.pkl --out=teachers/edm_imagenet64_cond)
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/imagenet64/common.py


def get_config():
  config = base_config(method='sid', network='edm_dhariwalunet', dataset='tfds')
  common.accelerator_run(config)
  config.network.update(common.EDM_ADM)
  # SiD / SIM / Diff-Instruct: Adam lr 1e-5, betas (0, 0.999), 1:1 updates, critic first, batch 256, EMA 0.9999.
  # SiD (run_sid.sh): lr 4e-6 for both roles, batch 8192, 1000 Mimg, EMA half-life 2 Mimg (0.99717).
  config.method.update(teacher=common.EDM_TEACHER)
  config.method.critic_optim.update(b1=0.0, lr=4e-6)
  config.train.update(batch_size=8192, num_steps=122_070)
  config.optim.update(b1=0.0, ema_rates=(0.99717,), lr=4e-6)
  config.eval.update(nfe=(1,), params='ema_0.99717')
  return config

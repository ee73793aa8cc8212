"""TCM (truncated consistency models, Lee et al. 2024) stage 2 on unconditional CIFAR-10, for accelerators, from a
stage-1 ECT run (configs/cifar10/ect.py); reference FID (1 / 2 NFE): 2.46 / 2.05 (NVlabs/TCM README).

  python -m fewstep_jax.main --config=configs/cifar10/ect.py --workdir=runs/cifar10_ect ...
  python -m fewstep_jax.main --config=configs/cifar10/tcm.py --workdir=runs/cifar10_tcm \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.stage1=runs/cifar10_ect
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/cifar10/common.py


def get_config():
  config = base_config(method='tcm', network='unet', dataset='tfds')
  common.accelerator_run(config)
  config.data.update(conditional=False)
  config.network.update(common.EDM_UNET, dropout=0.2)
  # NVlabs/TCM README stage-2 command: t' = 1, boundary fraction 0.25 with weight 0.1, ln t ~ Student-t(0.01,
  # 0, 0.2) on [0, ln 80], ratio 0.999, c = 1e-8 with 1 / (t - r), batch 1024, RAdam lr 5e-5, dropout 0.2,
  # EMA 0.9999; 300k iterations as FastGen's config (the README's 3M is an upper bound).
  config.method.update(stage1='runs/cifar10_ect', transition_sigma=1.0, boundary_fraction=0.25,
                        boundary_weight=0.1, t_df=0.01, t_mean=0.0, t_std=0.2, ratio=0.999, huber_c=1e-8,
                        weighting='inverse_gap', sample_sigmas=(1.0,),
                        stage1_steps=400_000)  # configs/cifar10/ect.py's length; no effect at constant lr and EMA.
  config.train.update(batch_size=1024, num_steps=300_000)
  config.optim.update(ema_rates=(0.9999,), lr=5e-5, name='radam')
  config.eval.update(nfe=(1, 2), params='ema_0.9999')
  return config

"""TCM (truncated consistency models, Lee et al. 2024) stage 2 on ImageNet-64, for accelerators, from a stage-1 ECT
run (configs/imagenet64/ect.py); reference FID (1 / 2 NFE): 2.88 / 2.31 with EDM2-S (NVlabs/TCM README; this
config tunes the codebase's EDM U-Net).

  python -m fewstep_jax.main --config=configs/imagenet64/ect.py --workdir=runs/imagenet64_ect ...
  python -m fewstep_jax.main --config=configs/imagenet64/tcm.py --workdir=runs/imagenet64_tcm \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.stage1=runs/imagenet64_ect
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/imagenet64/common.py


def get_config():
  config = base_config(method='tcm', network='unet', dataset='tfds')
  common.accelerator_run(config)
  config.network.update(common.EDM_UNET, dropout=0.1)
  # NVlabs/TCM README ImageNet stage-2 command: t' = 1, boundary 0.25 / 0.1, ln t ~ Student-t(0.01, 0, 0.2),
  # ratio 0.9961 (q = 4's limit), c = 0.06 with 1 / c_out(t)^2 (= EDM's weight), batch 1024; 2-step sampling at
  # 1.526 as FastGen's config. Not the paper's: the optimizer (its Adam lr 5e-4 with inverse-sqrt decay is for
  # EDM2's magnitude-preserving networks), as configs/imagenet64/ect.py.
  config.method.update(stage1='runs/imagenet64_ect', transition_sigma=1.0, boundary_fraction=0.25,
                        boundary_weight=0.1, t_df=0.01, t_mean=0.0, t_std=0.2, ratio=0.9961, huber_c=0.06,
                        weighting='edm', sample_sigmas=(1.526,))
  config.train.update(batch_size=1024, num_steps=400_000)
  config.optim.update(ema_rates=(0.9999,), lr=5e-5, name='radam')
  config.eval.update(nfe=(1, 2), params='ema_0.9999')
  return config

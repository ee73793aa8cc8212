"""TCM (truncated consistency models, Lee et al. 2024) stage 2 on class-conditional ImageNet-64 with EDM2-S, as the
official README's ImageNet stage-2 command (NVlabs/TCM); reference FID (1 / 2 NFE) 2.88 / 2.31 (its README's TCM
EDM2-S row; EDM2-XL 2.20 / 1.62). Stage 1 is an ECT run on the same network (configs/imagenet64/ect.py). TCM's own
stage 1 differs from ECT's official run: batch 2048, a stage per 10k steps, 800k steps
(--config.train.batch_size=2048 --config.method.stage_steps=10000 --config.train.num_steps=800000) and its ratio
capped at 0.9961 (stage 3 of q = 4), which the ect method does not cap.

  python -m fewstep_jax.main --config=configs/imagenet64/ect.py --workdir=runs/imagenet64_ect ...
  python -m fewstep_jax.main --config=configs/imagenet64/tcm.py --workdir=runs/imagenet64_tcm \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 --config.method.stage1=runs/imagenet64_ect

Stage 2 continues stage 1's counters, as the official --resume_tick does: method.stage1_steps is the step of the
stage-1 checkpoint it starts from (800k, the end of TCM's stage-1 command; 100k for configs/imagenet64/ect.py as it
stands: set --config.method.stage1_steps to your run's). The learning rate then starts at 5e-4 / sqrt(R / 8000).
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/imagenet64/common.py


def get_config():
  config = base_config(method='tcm', network='edm2_unet', dataset='tfds')
  common.accelerator_run(config)
  # --arch=edm2-img64-s --dropout=0.4, applied at 16 and 8 px only (its training/networks.py Block:
  # dout_resolutions=[16, 8]), with forced weight normalisation (its MPConv in training mode).
  config.network.update(common.EDM2_S, dropout=0.4, dropout_res=16, logvar_head=False, forced_weight_norm=True)
  # The stage-2 command: t' = 1, boundary 0.25 / 0.1, ln t ~ Student-t(0.01, 0, 0.2), ratio 0.9961 (q = 4's limit),
  # c = 0.06 with 1 / c_out(t)^2 (= EDM's weight), batch 1024, 800k steps; 2-step sampling at 1.526 as FastGen's.
  config.method.update(stage1='runs/imagenet64_ect', transition_sigma=1.0, boundary_fraction=0.25,
                       boundary_weight=0.1, t_df=0.01, t_mean=0.0, t_std=0.2, ratio=0.9961, huber_c=0.06,
                       weighting='edm', sample_sigmas=(1.526,),
                       stage1_steps=800_000)
  config.train.update(batch_size=1024, num_steps=800_000)
  # Adam lr 5e-4, beta2 0.99, inverse-square-root decay after 8000 steps, no ramp-up; the power-function EMA with
  # gamma 16.97, which is sigma_rel 0.05.
  config.optim.update(name='adam', lr=5e-4, b2=0.99, schedule='inverse_sqrt', warmup_steps=0, decay_ref_steps=8000,
                      ema_rates=(), ema_stds=(0.05,))
  config.eval.update(nfe=(1, 2), params='phema_0.05')
  return config

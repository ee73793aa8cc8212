"""ECT (easy consistency tuning of the EDM teacher) on ImageNet-64, for accelerators; reference FID (1 / 2 NFE):
2.49 / 1.67 (as sCM's Table 1 cites ECT, with an EDM2 network; this config tunes the codebase's EDM U-Net).


  python -m fewstep_jax.main --config=configs/imagenet64/ect.py --workdir=runs/imagenet64_ect \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 \
      --config.method.init_from=runs/imagenet64_edm
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/imagenet64/common.py


def get_config():
  config = base_config(method='ect', network='unet', dataset='tfds')
  common.accelerator_run(config)
  config.network.update(common.EDM_UNET, dropout=0.1)
  # ECT (Geng et al. 2024), the official code's imgnet branch (training/loss.py `ECMLoss`): P_mean -0.8,
  # P_std 1.6, pseudo-Huber c = 0.06, q = 4, EDM's weighting. Not the paper's: the optimizer (its Adam
  # lr 1e-3 is for EDM2's magnitude-preserving networks); batch 1024 with a stage per 3125 steps keeps
  # the paper's images per stage.
  config.method.update(huber_c=0.06, init_from='runs/imagenet64_edm', p_mean=-0.8, p_std=1.6, q=4.0,
                        stage_steps=3125, weighting='edm')
  config.train.update(batch_size=1024, num_steps=100_000)
  config.optim.update(ema_rates=(0.9999,), lr=1e-4, name='radam')
  config.eval.update(nfe=(1, 2), params='ema_0.9999')
  return config

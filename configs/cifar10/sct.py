"""sCT on unconditional CIFAR-10 (U-Net with a log-variance head), for accelerators; reference 2.85 / 2.06 FID at
1 / 2 NFE (sCM, ICLR 2025, Table 1; arXiv v1 gave 2.97).

  python -m fewstep_jax.main --config=configs/cifar10/sct.py --workdir=runs/cifar10_sct \
      --config.data.dir=/path/to/tensorflow_datasets --config.mesh.data=8 [--config.method.init_from=RUN]

The paper initialises from a pretrained TrigFlow diffusion model: pass one as `init_from` (same network config);
without it the run starts from scratch and the tangent warmup trains the diffusion target first.
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/cifar10/common.py


def get_config():
  config = base_config(method='sct', network='unet', dataset='tfds')
  common.accelerator_run(config)
  config.data.update(conditional=False)
  config.network.update(attn_resolutions=(16,), channel_mult=(2, 2, 2), channels=128, dropout=0.2,
                         logvar_head=True, num_res_blocks=4, time_scale=1.0)
  # sCM (Lu & Song, ICLR 2025), appendix G.2 and Table 1 (unconditional): RAdam lr 1e-4, betas (0.9, 0.99),
  # batch 512, EMA half-life 0.5 Mimg (0.5^(512 / 0.5e6) = 0.99929 per step), proposal (P_mean, P_std) =
  # (-1.0, 1.4), tangent warmup over 10k steps, tangent normalisation c = 0.1 (the method's default).
  # Not the paper's: this codebase's EDM teacher U-Net with a log-variance head and c_noise(tau) = tau, and one
  # dropout rate at every resolution (the paper: 45% at 16 px and below for sCT).
  config.method.update(label_dropout=0.0)
  config.train.update(batch_size=512, num_steps=400_000)
  config.optim.update(b2=0.99, ema_rates=(0.99929,), lr=1e-4, name='radam')
  config.eval.update(nfe=(1, 2), params='ema_0.99929')
  return config

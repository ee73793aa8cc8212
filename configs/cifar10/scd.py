"""sCD on unconditional CIFAR-10 from the unconditional EDM teacher (configs/cifar10/edm.py with
--config.data.conditional=False), converted exactly to TrigFlow, for accelerators; no dropout (sCM appendix G.2).
The sCM paper reports no CIFAR-10 sCD figure.

  python -m fewstep_jax.main --config=configs/cifar10/scd.py --workdir=runs/cifar10_scd \
      --config.data.dir=/path/to/tensorflow_datasets --config.method.teacher=runs/cifar10_edm_uncond
"""
from fewstep_jax.config_base import base_config, load_sibling

common = load_sibling(__file__)  # configs/cifar10/common.py


def get_config():
  config = base_config(method='scd', network='unet', dataset='tfds')
  common.accelerator_run(config)
  config.data.update(conditional=False)
  config.network.update(attn_resolutions=(16,), channel_mult=(2, 2, 2), channels=128, logvar_head=True,
                         num_res_blocks=4, time_scale=1.0)
  # sCM (Lu & Song, ICLR 2025), appendix G.2 and Table 1 (unconditional): RAdam lr 1e-4, betas (0.9, 0.99),
  # batch 512, EMA half-life 0.5 Mimg (0.5^(512 / 0.5e6) = 0.99929 per step), proposal (P_mean, P_std) =
  # (-1.0, 1.4), tangent warmup over 10k steps, tangent normalisation c = 0.1 (the method's default).
  # Not the paper's: this codebase's EDM teacher U-Net with a log-variance head and c_noise(tau) = tau, and one
  # dropout rate at every resolution (the paper: 45% at 16 px and below for sCT).
  config.method.update(label_dropout=0.0, teacher='runs/cifar10_edm_uncond')
  config.train.update(batch_size=512, num_steps=400_000)
  config.optim.update(b2=0.99, ema_rates=(0.99929,), lr=1e-4, name='radam')
  config.eval.update(nfe=(1, 2), params='ema_0.99929')
  return config

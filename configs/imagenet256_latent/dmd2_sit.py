"""DMD2 on class-conditional ImageNet 256x256 in SD-VAE latent space (32x32x4), distilling SiT's published SiT-XL/2
(SiT-XL-2-256x256.pt) into a 1-step generator on the same network, for GPU clusters / TPU pods.

No paper row: none of the distillation papers this codebase follows publishes a SiT-XL/2 run, so the values below are
DMD2's ImageNet-64 recipe (configs/imagenet64/dmd2.py), unchanged, as a starting point; there is no reference FID.
The teacher is read through the `sit` readout (SiT's reversed time and velocity), converted exactly to the EDM
denoiser DMD2 works with; the student and critic start from its weights. SiT drops 10% of its labels in training
passes inside the network; here the network never drops (train_label_dropout=False), as DMD2 trains its roles on the
labels it is given. Unguided (teacher_guidance 1, SiT's FID 9.35 with 250 SDE steps); SiT's own best (2.06) uses
CFG 1.5: --config.method.teacher_guidance=1.5.

  python -m fewstep_jax.tools.import_checkpoint --src=SiT-XL-2-256x256.pt --arch=sit_xl_2 --out=teachers/sit_xl_2
  python -m fewstep_jax.tools.encode_latents --vae=sd-vae-ft-ema/diffusion_pytorch_model.safetensors \
      --out=data/imagenet256_sdvae_latents --tfds_name=imagenet2012 --data_dir=/path/to/tensorflow_datasets
  python -m fewstep_jax.main --config=configs/imagenet256_latent/dmd2_sit.py --workdir=runs/in256_dmd2_sit \
      --config.data.vae=sd-vae-ft-ema/diffusion_pytorch_model.safetensors --config.mesh.data=32 --config.mesh.fsdp=8
"""
from fewstep_jax.config_base import base_config
from fewstep_jax.tools.import_checkpoint import PRESETS

# DMD2's optimizer for both roles (tianweiy/DMD2 main/edm/train_edm.py), as configs/imagenet64/dmd2.py.
DMD_OPTIM = dict(name='adamw', lr=2e-6, b1=0.9, b2=0.999, weight_decay=0.01, schedule='warmup', warmup_steps=500,
                 grad_clip=10.0)
SIT_TEACHER = 'teachers/sit_xl_2'


def get_config():
  config = base_config(method='dmd2', network='sit', dataset='latents')
  config.data.latents_dir = 'data/imagenet256_sdvae_latents'
  config.network.update(PRESETS['sit_xl_2'][1], train_label_dropout=False)
  config.method.update(gan_generator_weight=0.003, gan_weight=0.01, teacher=SIT_TEACHER)
  config.method.critic_optim.update(DMD_OPTIM)
  config.train.update(batch_size=280, num_steps=400_000, log_every=100, checkpoint_every=10_000,
                      sample_every=50_000, compute_dtype='bfloat16')
  config.optim.update(DMD_OPTIM, ema_rates=())
  config.eval.update(nfe=(1,), params='params', at_end=False, num_samples=50_000)
  return config

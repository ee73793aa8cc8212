"""What the ImageNet-64 experiment files share: the dataset, a long accelerator run's logging and checkpoint
cadence in bfloat16, and the EDM teacher's U-Net, which the distillation and consistency runs must fit (their
student starts from the teacher, or the teacher is read on the same network).

A config file reads this module with `config_base.load_sibling(__file__)`.
"""
from fewstep_jax.tools.import_checkpoint import PRESETS

# configs/imagenet64/edm.py's ADM-style U-Net (c_noise = ln(sigma) / 4 with time_scale 250); dropout is set per run.
EDM_UNET = dict(channels=192, channel_mult=(1, 2, 3, 4), num_res_blocks=3, attn_resolutions=(32, 16, 8),
                dropout=0.0, time_scale=250.0)


# EDM's published ImageNet-64 network (ADM on EDMPrecond, class-conditional), which the SiD and DMD2 rows
# distil. Imported once, without PyTorch:
#   python -m fewstep_jax.tools.import_checkpoint --src=edm-imagenet-64x64-cond-adm.pkl --out=teachers/edm_imagenet64_cond
EDM_ADM = dict(PRESETS['edm_imagenet64_adm'][1], dropout=0.0)
EDM_TEACHER = 'teachers/edm_imagenet64_cond'


# EDM2's published ImageNet-64 S network (EDM2 Precond, class-conditional; post-hoc EMA sigma_rel 0.075), which ECT's
# official ImageNet run (its `imgnet` branch, run_imgnet_ecm.sh --transfer) and TCM's start from. Imported once:
#   python -m fewstep_jax.tools.import_checkpoint --src=edm2-img64-s-1073741-0.075.pkl --out=teachers/edm2_img64_s
# A student on it keeps the uncertainty head's parameters (logvar_head=False only stops returning it).
EDM2_S = dict(PRESETS['edm2_img64_s'][1], dropout=0.0)
EDM2_TEACHER = 'teachers/edm2_img64_s'


# The consistency-models code's EDM teacher (its UNetModel, `edm_imagenet64_ema.pt`), which CM's ImageNet-64 CD rows
# distil and start from. Imported once: the state dict records no image size, so the preset names it:
#   python -m fewstep_jax.tools.import_checkpoint --src=edm_imagenet64_ema.pt --arch=cm_imagenet64 --out=teachers/cm_imagenet64
CM_UNET = dict({key: value for key, value in PRESETS['cm_imagenet64'][1].items() if key != 'image_size'},
               dropout=0.0)
CM_TEACHER = 'teachers/cm_imagenet64'


def accelerator_run(config):
  """ImageNet 64x64 (imagenet_resized) from TFDS in bfloat16, a line every 100 steps, a checkpoint every 10k and
  samples every 50k. Evaluation is FID-50k and IS (the papers' sample count) by --mode=eval, given the Inception
  weights and the dataset's reference statistics (--config.eval.inception=FILE --config.eval.reference_stats=FILE,
  docs/evaluation.md); not at the end of training, which does not know those files."""
  config.data.tfds_name = 'imagenet_resized/64x64'
  config.train.update(log_every=100, checkpoint_every=10_000, sample_every=50_000, compute_dtype='bfloat16')
  config.eval.update(at_end=False, num_samples=50_000)
  return config

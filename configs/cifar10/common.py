"""What the CIFAR-10 experiment files share: the dataset, a long accelerator run's logging and checkpoint cadence,
and the EDM teacher's U-Net, which the distillation and consistency runs must fit (their student starts from the
teacher, or the teacher is read on the same network).

A config file reads this module with `config_base.load_sibling(__file__)`.
"""
from fewstep_jax.tools.import_checkpoint import PRESETS

# configs/cifar10/edm.py's DDPM++-style U-Net (c_noise = ln(sigma) / 4 with time_scale 250); dropout is set per run
# (it changes no parameter, so a student may use another rate than its teacher).
EDM_UNET = dict(channels=128, channel_mult=(2, 2, 2), num_res_blocks=4, attn_resolutions=(16,), dropout=0.0,
                time_scale=250.0)


# EDM's published CIFAR-10 networks (DDPM++ on EDMPrecond, trained with augmentation labels), which the
# distillation rows of SiD, SIM, Diff-Instruct and ECT start from. Imported once, without PyTorch:
#   python -m fewstep_jax.tools.import_checkpoint --src=edm-cifar10-32x32-cond-vp.pkl --out=teachers/edm_cifar10_cond
#   python -m fewstep_jax.tools.import_checkpoint --src=edm-cifar10-32x32-uncond-vp.pkl --out=teachers/edm_cifar10_uncond
# A student on the same network starts from the teacher's weights; its dropout is set per run (0 here: dropout
# changes no parameter).
EDM_DDPMPP = dict(PRESETS['edm_cifar10_ddpmpp'][1], augment_dim=9, dropout=0.0)
EDM_TEACHER = {True: 'teachers/edm_cifar10_cond', False: 'teachers/edm_cifar10_uncond'}  # By data.conditional.


# EDM's published unconditional NCSN++ (edm-cifar10-32x32-uncond-ve.pkl: NCSN++ with EDM's preconditioning and
# training), the public counterpart of CM's CIFAR-10 teacher (the same NCSN++ trained with EDM's recipe by the
# consistency_models_cifar10 code, configs/cifar10_k_ve.py, in a JAX checkpoint not ported here):
#   python -m fewstep_jax.tools.import_checkpoint --src=edm-cifar10-32x32-uncond-ve.pkl --out=teachers/edm_cifar10_uncond_ve
EDM_NCSNPP = dict(PRESETS['edm_cifar10_ncsnpp'][1], augment_dim=9, dropout=0.0)
EDM_NCSNPP_TEACHER = 'teachers/edm_cifar10_uncond_ve'


def accelerator_run(config):
  """CIFAR-10 from TFDS, a line every 100 steps, a checkpoint every 10k and
  samples every 50k. Evaluation is FID-50k and IS (the papers' sample count) by --mode=eval, given the Inception
  weights and the dataset's reference statistics (--config.eval.inception=FILE --config.eval.reference_stats=FILE,
  docs/evaluation.md); not at the end of training, which does not know those files."""
  config.data.tfds_name = 'cifar10'
  config.train.update(log_every=100, checkpoint_every=10_000, sample_every=50_000)
  config.eval.update(at_end=False, num_samples=50_000)
  return config

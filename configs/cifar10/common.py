"""What the CIFAR-10 experiment files share: the dataset, a long accelerator run's logging and checkpoint cadence,
and the EDM teacher's U-Net, which the distillation and consistency runs must fit (their student starts from the
teacher, or the teacher is read on the same network).

A config file reads this module with `config_base.load_sibling(__file__)`.
"""

# configs/cifar10/edm.py's DDPM++-style U-Net (c_noise = ln(sigma) / 4 with time_scale 250); dropout is set per run
# (it changes no parameter, so a student may use another rate than its teacher).
EDM_UNET = dict(channels=128, channel_mult=(2, 2, 2), num_res_blocks=4, attn_resolutions=(16,), dropout=0.0,
                time_scale=250.0)


def accelerator_run(config):
  """CIFAR-10 from TFDS, a line every 100 steps, a checkpoint every 10k and
  samples every 50k. Evaluation is FID-50k and IS (the papers' sample count) by --mode=eval, given the Inception
  weights and the dataset's reference statistics (--config.eval.inception=FILE --config.eval.reference_stats=FILE,
  README "FID / IS setup"); not at the end of training, which does not know those files."""
  config.data.tfds_name = 'cifar10'
  config.train.update(log_every=100, checkpoint_every=10_000, sample_every=50_000)
  config.eval.update(at_end=False, num_samples=50_000)
  return config

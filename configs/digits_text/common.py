"""What the captioned-digits experiment files share: the tiny SD U-Net and the text setup. A config file reads this
module with `config_base.load_sibling(__file__)`.

The data are the 8x8 digits captioned with their measured stroke mass, slant and width ('a thick, right-leaning
seven'), encoded by a tiny frozen CLIP text encoder (fewstep_jax/data/digits_text.py); the network is `sd_unet` at
its preset 'digits' (SD 1.5's blocks at 8x8x1, cross-attention on the 64-wide token states, and SDXL's text_time
embedding: the whitened pooled caption and the size ids added to the time embedding, so that the caption reaches
every block as a class embedding does). Evaluation adds to the digits Frechet distance how often the classifier
reads the caption's digit (caption_accuracy) and how often the sample's measured attributes are the caption's
(attribute_agreement).
"""


def network(config, *, time_scale: float, two_times: bool = False):
  config.network.update(preset='digits', time_scale=time_scale, two_times=two_times)
  return config


def training(config, *, num_steps: int = 2000):
  """2000 steps of batch 128, Adam lr 1e-3 with 200 warmup steps, cosine decay and gradient clipping at 1, EMA
  0.999, evaluation on 1000 samples (each of the 60 evaluation captions about 17 times)."""
  config.train.update(num_steps=num_steps, batch_size=128, log_every=100, checkpoint_every=1000)
  config.optim.update(lr=1e-3, schedule='cosine', warmup_steps=200, grad_clip=1.0, ema_rates=(0.999,))
  config.eval.update(params='ema_0.999', num_samples=1000)
  return config


def distillation(config):
  """Distillation from configs/digits_text/edm.py's run (runs/digits_text_edm, text CFG 2 in the teacher) on its
  network; 1000 steps of batch 128, Adam lr 1e-4, betas (0, 0.99), EMA 0.99, 1 NFE and its multi-step uses."""
  network(config, time_scale=250.0)
  config.method.update(teacher='runs/digits_text_edm', teacher_guidance=2.0)
  config.train.update(num_steps=1000, batch_size=128, log_every=100, checkpoint_every=500)
  config.optim.update(name='adam', lr=1e-4, b1=0.0, b2=0.99, ema_rates=(0.99,))
  config.eval.update(params='ema_0.99', nfe=(1, 2, 4), num_samples=1000)
  return config

"""Data 'pipeline_prompts': no training examples, only the conditions to sample a text-to-image teacher at, read from a
downloaded diffusers pipeline folder (data.pipeline) and a prompts file (data.prompts_file, one a line).

- data_shape: the pipeline's latents, (sample_size, sample_size, in_channels) of its unet/config.json.
- conditioning: text conditions encoded by the pipeline's text encoders, with its null and SDXL's time_ids for the
  image size sample_size x the VAE's downsampling (fewstep_jax/text/conditions.py); sample i is conditioned on
  prompt i mod N (conditions.Conditioning.for_samples).
- latent_vae: the VAE that decodes samples to images, data.vae if set (another vae/ folder, e.g. the community
  sdxl-vae-fp16-fix, or a weights file), else the pipeline's vae/, with the scaling factor of its config.json.

Training on it is refused (it has no images); --mode=sample writes the samples as images.
"""
import functools
import os

import numpy as np

from fewstep_jax.conditions import Conditioning
from fewstep_jax.data.latents import LatentNorm
from fewstep_jax.errors import ConfigError, InputNotFoundError
from fewstep_jax.nn import sd_unet, sd_vae


class PipelinePromptsData:
  """DataPipeline 'pipeline_prompts' (see the module docstring): conditions and a decoder, no examples."""

  kind = 'host'
  num_classes = 0
  evaluator = 'pipeline_prompts'

  def __init__(self, config_data):
    self.pipeline = config_data.get('pipeline', '')
    if not self.pipeline:
      raise ConfigError("data 'pipeline_prompts' reads a downloaded diffusers pipeline: set --config.data.pipeline "
                        'to its folder (with unet/, text_encoder/, tokenizer/ and vae/)')
    if not config_data.get('prompts_file', ''):
      raise ConfigError("data 'pipeline_prompts' samples at prompts: set --config.data.prompts_file to a text file "
                        'of prompts, one a line')
    if not os.path.isdir(self.pipeline):
      raise InputNotFoundError(f'data.pipeline={self.pipeline!r} is not a folder; nothing is downloaded: set '
                               '--config.data.pipeline to a downloaded diffusers pipeline folder')
    self.prompts_file = config_data.prompts_file
    self._vae = config_data.get('vae', '') or self.pipeline
    _, unet_config_path = sd_unet.find_files(self.pipeline)
    if unet_config_path is None:
      raise ConfigError(f'{self.pipeline} has no unet/config.json, which gives the latents\' shape: data.pipeline must '
                        'be a downloaded diffusers pipeline folder')
    unet_config = sd_unet.read_config(unet_config_path)
    side = unet_config.get('sample_size')
    height, width = (side, side) if isinstance(side, int) else side
    self.data_shape = (int(height), int(width), int(unet_config.get('in_channels', 4)))
    vae_config = sd_vae.find_files(self._vae)[1]
    widths = sd_vae.read_config(vae_config)['block_out_channels'] if vae_config else sd_vae.SDVAE.block_out_channels
    self.image_size = tuple(side * 2 ** (len(widths) - 1) for side in self.data_shape[:2])

  @functools.cached_property
  def conditioning(self) -> Conditioning:
    from fewstep_jax import text
    return text.pipeline_conditioning(self.pipeline, text.read_prompts(self.prompts_file), self.image_size)

  def prompt_texts(self) -> list:
    from fewstep_jax import text
    return text.read_prompts(self.prompts_file)

  @functools.cached_property
  def latent_vae(self) -> tuple:
    """(the VAE's weights: a file or folder for sd_vae.load, LatentNorm of its scaling and shift factors)."""
    scale, shift = sd_vae.latent_scaling(self._vae)
    return self._vae, LatentNorm(np.float32(scale), np.float32(-shift * scale), 'signed')

  def next_batch(self) -> dict:
    raise ConfigError("data 'pipeline_prompts' holds prompts, not training examples: sample a teacher with it "
                      '(--mode=sample), or train on data that has images or latents')

  def get_state(self) -> dict:
    return {}

  def set_state(self, state: dict) -> None:
    del state

  def reference_samples(self, n: int, split: str, seed: int) -> dict:
    raise ConfigError("data 'pipeline_prompts' has no reference images: set eval.metrics to metrics with stored "
                      'reference statistics (inception with eval.reference_stats)')

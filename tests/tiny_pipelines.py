"""Tiny random diffusers pipeline folders in the published layout (model_index.json, unet/, text_encoder(_2)/,
tokenizer(_2)/, vae/, scheduler/), for tests of what reads a downloaded pipeline: the SD U-Net at the tiny presets
(test_sd_unet's folder writer), CLIP text encoders of a few layers with the test tokenizers' 791-token vocabulary,
and an SD-VAE of widths 8 and 16 (latents 8x8x4, images 16x16)."""
import json
import os
import shutil

import jax
import numpy as np
from safetensors.numpy import save_file

from fewstep_jax.nn import clip_text, sd_unet, sd_vae
from test_sd_unet import SD_SCHEDULER, write_unet_folder

TOKENIZERS = os.path.join(os.path.dirname(__file__), 'data', 'clip_tokenizer')
LATENT_SIDE = 8
# AutoencoderKL's config.json keys at a tiny width; SDXL's VAE config adds its scaling factor.
VAE_CONFIG = {'_class_name': 'AutoencoderKL', 'block_out_channels': [8, 16], 'layers_per_block': 1,
              'latent_channels': 4, 'norm_num_groups': 4, 'in_channels': 3, 'out_channels': 3,
              'down_block_types': ['DownEncoderBlock2D'] * 2, 'up_block_types': ['UpDecoderBlock2D'] * 2}
SDXL_SCALING_FACTOR = 0.13025


def write_json(path, contents: dict):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as file:
    json.dump(contents, file)


def vae_params(config: dict = VAE_CONFIG, seed: int = 0) -> dict:
  """Random parameters of a tiny VAE (numpy: jax.random per leaf would compile a kernel per shape)."""
  abstract = sd_vae.abstract_params(sd_vae.from_config(config), image_size=8)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda leaf: (0.2 * rng.standard_normal(leaf.shape)).astype(np.float32), abstract)


def write_vae(folder, params: dict, config: dict, file_name: str = sd_vae.WEIGHT_FILES[0], dtype=np.float32):
  """A vae/ folder: config.json and the weights as `file_name` in `dtype`."""
  write_json(os.path.join(folder, 'config.json'), config)
  save_file({key: value.astype(dtype) for key, value in sd_vae.to_state_dict(params).items()},
            os.path.join(folder, file_name))


def _write_text_encoder(root, name: str, hidden: int, projection: int, seed: int, tokenizer: str):
  config = {'architectures': ['CLIPTextModelWithProjection' if projection else 'CLIPTextModel'],
            'hidden_size': hidden, 'intermediate_size': 2 * hidden, 'num_hidden_layers': 2,
            'num_attention_heads': 4, 'max_position_embeddings': 77, 'hidden_act': 'quick_gelu', 'vocab_size': 791,
            'projection_dim': projection, 'eos_token_id': 2}
  write_json(os.path.join(root, name, 'config.json'), config)
  save_file(clip_text.random_weights(clip_text.CLIPTextConfig.from_json(config), seed),
            os.path.join(root, name, 'model.safetensors'))
  shutil.copytree(os.path.join(TOKENIZERS, tokenizer), os.path.join(root, name.replace('text_encoder', 'tokenizer')))


def _write_unet(root, preset: str, width: int):
  config = json.loads(json.dumps(dict(sd_unet.PRESETS[preset], cross_attention_dim=width, sample_size=LATENT_SIDE)))
  write_unet_folder(root, config, sd_unet.random_weights(sd_unet.from_config(preset, cross_attention_dim=width)))


def sd15_pipeline(root, preset: str = 'sd15_tiny') -> str:
  """A StableDiffusionPipeline folder: the U-Net `preset` (sd15_tiny, or the smaller digits: one latent channel) on
  32-wide token states of one text encoder."""
  _write_unet(root, preset, 32)
  _write_text_encoder(root, 'text_encoder', 32, 0, 0, 'sd15_tokenizer')
  channels = sd_unet.PRESETS[preset].get('in_channels', 4)
  vae_config = dict(VAE_CONFIG, latent_channels=channels)  # SD 1.5's config.json has no scaling_factor.
  write_vae(os.path.join(root, 'vae'), vae_params(vae_config), vae_config)
  write_json(os.path.join(root, 'scheduler', 'scheduler_config.json'), SD_SCHEDULER)
  write_json(os.path.join(root, 'model_index.json'), {'_class_name': 'StableDiffusionPipeline'})
  return str(root)


def sdxl_pipeline(root, force_zeros: bool = True) -> str:
  """A StableDiffusionXLPipeline folder: the sdxl_tiny U-Net (tokens 16 + 32 = 48 wide, pooled 32) on two text
  encoders, the second with a projection; model_index.json's force_zeros_for_empty_prompt = `force_zeros`."""
  _write_unet(root, 'sdxl_tiny', 48)
  _write_text_encoder(root, 'text_encoder', 16, 0, 0, 'sd15_tokenizer')
  _write_text_encoder(root, 'text_encoder_2', 32, 32, 1, 'sdxl_tokenizer_2')
  write_vae(os.path.join(root, 'vae'), vae_params(), dict(VAE_CONFIG, scaling_factor=SDXL_SCALING_FACTOR))
  write_json(os.path.join(root, 'scheduler', 'scheduler_config.json'),
             dict(SD_SCHEDULER, _class_name='EulerDiscreteScheduler', timestep_spacing='leading', steps_offset=1))
  write_json(os.path.join(root, 'model_index.json'), {'_class_name': 'StableDiffusionXLPipeline',
                                                      'force_zeros_for_empty_prompt': force_zeros})
  return str(root)

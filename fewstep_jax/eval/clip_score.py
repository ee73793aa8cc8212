"""The CLIP score of text-to-image samples (Hessel et al. 2021; torchmetrics' CLIPScore, w = 100): the mean over the
samples of max(100 cos(E_image, E_text), 0), each sample against the prompt it was generated for, with the CLIP model
a paper's table names (eval.clip: a transformers CLIP model folder, config.json, model.safetensors and its tokenizer's
vocab.json and merges.txt; OpenAI ViT-L/14 is `clip-vit-large-patch14`, OpenCLIP ViT-g/14 its transformers port).

Sample i has prompt i mod N of the data's evaluation prompts (`DataPipeline.prompt_texts`), as its condition does.
Images are read in [-1, 1] (decoded latents included), mapped to [0, 1], grey ones repeated to 3 channels, resized and
normalised by `clip_vision.preprocess`. Both towers run under jit with replicated parameters; the sum is float64 on
the host in sample order, so the score does not depend on the batch size or the device count.
"""
import jax
import jax.numpy as jnp
import numpy as np

from fewstep_jax.nn import clip_text, clip_vision
from fewstep_jax.text.tokenizer import CLIPTokenizer
from fewstep_jax.train import sharding

TEXT_WEIGHTS = ('text_model.', 'text_projection.')


def load_clip(folder: str):
  """(image tower, its params, text encoder, its params, tokenizer) of a transformers CLIPModel folder: its
  config.json and weights file, each read once for both towers."""
  import json
  import os
  from fewstep_jax import errors, weight_files
  config_path = os.path.join(folder, 'config.json')
  if not os.path.isfile(config_path):
    raise errors.InputNotFoundError(f'{config_path} not found: eval.clip must be a downloaded CLIP model folder')
  with open(config_path) as file:
    contents = json.load(file)
  if 'text_config' not in contents:
    raise errors.ConfigError(f'{config_path} is not a CLIPModel config (no text_config): eval.clip needs both towers')
  vision_config = clip_vision.CLIPVisionConfig.from_json(contents)
  text_config = clip_text.CLIPTextConfig.from_json({**contents['text_config'], 'architectures': [
      clip_text.WITH_PROJECTION], 'projection_dim': contents.get('projection_dim', 512)})
  path = clip_text.weights_file(folder)
  state = weight_files.read_state_dict(path)
  vision_params = clip_vision.from_state_dict(state, vision_config, source=path)
  text_params = clip_text.from_state_dict({name: value for name, value in state.items()
                                           if name.startswith(TEXT_WEIGHTS)}, text_config, source=path)
  return (clip_vision.CLIPVisionEncoder(vision_config), vision_params, clip_text.CLIPTextEncoder(text_config),
          text_params, CLIPTokenizer.from_folder(folder))


class ClipScoreMetrics:
  """Evaluator 'clip_score' (eval.metrics): row clip_score_<n>."""

  def __init__(self, run, n: int, seed: int):
    del seed
    folder = run.config.eval.get('clip', '')
    if not folder:
      raise ValueError('the CLIP score needs a CLIP model: set --config.eval.clip to a transformers CLIP model folder '
                       '(config.json, model.safetensors, vocab.json, merges.txt), e.g. clip-vit-large-patch14')
    prompts = run.data.prompt_texts() if hasattr(run.data, 'prompt_texts') else None
    if not prompts:
      raise ValueError('the CLIP score needs the evaluation prompts as text: set --config.data.prompts_file')
    vision, vision_params, encoder, text_params, tokenizer = load_clip(folder)
    replicated = sharding.replicated(run.mesh)
    ids = jnp.asarray(tokenizer(prompts)[:, :encoder.config.max_position_embeddings], jnp.int32)
    text = jax.jit(lambda p, ids: encoder.apply({'params': p}, ids).projected, out_shardings=replicated)
    self.text_embeds = np.asarray(text(jax.device_put(text_params, replicated), ids))
    size = vision.config.image_size
    self.vision_params = jax.device_put(vision_params, replicated)
    self.image_embeds = jax.jit(lambda p, images: vision.apply({'params': p}, clip_vision.preprocess(images, size)),
                                out_shardings=replicated)
    self.name = f'clip_score_{n // 1000}k' if n % 1000 == 0 else f'clip_score_{n}'

  def start(self):
    self.total, self.seen = 0.0, 0

  def add(self, samples, labels, count: int):
    del labels
    images = (jnp.asarray(samples)[:count] + 1.0) / 2.0
    if images.shape[-1] == 1:
      images = jnp.repeat(images, 3, axis=-1)
    embeds = np.asarray(self.image_embeds(self.vision_params, images))
    rows = (self.seen + np.arange(count)) % len(self.text_embeds)
    scores = np.asarray(clip_vision.clip_score(jnp.asarray(embeds), jnp.asarray(self.text_embeds[rows])))
    self.total += float(np.sum(scores.astype(np.float64)))
    self.seen += count

  def finish(self) -> list:
    return [(self.name, self.total / self.seen, None)]

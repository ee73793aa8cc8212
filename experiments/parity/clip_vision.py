"""CLIP's image tower and CLIP score in fewstep_jax against transformers', on random weights.

  PYTHONPATH=. python experiments/parity/clip_vision.py [--golden=tests/data/clip_vision_golden.npz]

Needs torch and transformers beside fewstep_jax. A tiny CLIPModel (both towers; the image tower of
`clip_vision.TINY`, the text tower of `clip_text.TINY`) is built with `clip_vision.random_weights` and
`clip_text.random_weights` and saved by save_pretrained (config.json and model.safetensors, as the published CLIP
models are stored). `clip_vision.load` and `text.load_encoder`-style loading of the same folder are run on the same
normalised pixels and token ids: image_embeds against `CLIPModel.get_image_features` (and a saved
CLIPVisionModelWithProjection's), text_embeds against `get_text_features`, and the CLIP score of each pair against
max(100 cos, 0) of transformers' features. The published ViT-L/14 and ViT-g/14 image towers are checked by parameter
count from shapes against transformers' model built on the meta device. One JSON line per check, max |ours - theirs|
/ max |theirs|; non-zero exit above --tolerance.

--golden writes the tiny model's weights, inputs and transformers' outputs for tests/test_clip_vision.py.

Measured (transformers 5.25.0, torch 2.13.0+cpu, jax 0.10.2, CPU): image_embeds 3.8e-07 (CLIPModel) and 3.8e-07
(CLIPVisionModelWithProjection), text_embeds 2.7e-07, CLIP score 3.9e-07; parameters: ViT-L/14 image tower
303,966,208 and ViT-g/14 1,012,645,632 (with projections), equal.
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np


def tiny_clip_config():
  from fewstep_jax.nn import clip_text, clip_vision
  v, t = clip_vision.TINY, clip_text.TINY
  return dict(
      architectures=['CLIPModel'], projection_dim=v.projection_dim,
      vision_config=dict(hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
                         num_hidden_layers=v.num_hidden_layers, num_attention_heads=v.num_attention_heads,
                         image_size=v.image_size, patch_size=v.patch_size, hidden_act=v.hidden_act,
                         layer_norm_eps=v.layer_norm_eps, num_channels=3),
      text_config=dict(vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
                       num_hidden_layers=t.num_hidden_layers, num_attention_heads=t.num_attention_heads,
                       max_position_embeddings=t.max_position_embeddings, hidden_act=t.hidden_act,
                       eos_token_id=t.eos_token_id, bos_token_id=0, pad_token_id=1, layer_norm_eps=t.layer_norm_eps))


def relative(got, want) -> float:
  return float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--golden', default='')
  parser.add_argument('--tolerance', type=float, default=1e-5)
  args = parser.parse_args()
  import torch
  import transformers
  import jax
  import jax.numpy as jnp
  from fewstep_jax.nn import clip_text, clip_vision

  config = tiny_clip_config()
  vision = clip_vision.random_weights(clip_vision.TINY, seed=1)
  text = clip_text.random_weights(clip_text.TINY, seed=2)
  state = {**vision, **{name: value for name, value in text.items()}, 'logit_scale': np.float32(2.6592)}
  model = transformers.CLIPModel(transformers.CLIPConfig(**{k: v for k, v in config.items() if k != 'architectures'}))
  missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()},
                                              strict=False)
  assert not [name for name in missing if 'position_ids' not in name] and not unexpected, (missing, unexpected)
  model.eval()
  folder = tempfile.mkdtemp(prefix='clip_vision_parity_')
  model.save_pretrained(folder)
  rng = np.random.default_rng(0)
  pixels = rng.standard_normal((3, 16, 16, 3)).astype(np.float32)  # NHWC, normalised.
  ids = rng.integers(3, clip_text.TINY.vocab_size - 1, (3, 9)).astype(np.int64)
  ids[:, -1] = 2  # CLIP's end-of-text token is the largest id in the published configs; here the eos id 2.
  ids[1, 5] = 2
  with torch.no_grad():
    image_want = model.get_image_features(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2)))
    text_want = model.get_text_features(input_ids=torch.from_numpy(ids))
  image_want = getattr(image_want, 'pooler_output', image_want).numpy()
  text_want = getattr(text_want, 'pooler_output', text_want).numpy()
  a = image_want / np.linalg.norm(image_want, axis=-1, keepdims=True)
  b = text_want / np.linalg.norm(text_want, axis=-1, keepdims=True)
  score_want = np.maximum(100 * np.sum(a * b, axis=-1), 0)

  tower, params = clip_vision.load(folder)
  image_got = np.asarray(jax.jit(tower.apply)({'params': params}, jnp.asarray(pixels)))
  text_config = clip_text.CLIPTextConfig.from_json({**config['text_config'], 'projection_dim': config['projection_dim'],
                                                    'architectures': [clip_text.WITH_PROJECTION]})
  from fewstep_jax import weight_files
  stored = weight_files.read_state_dict(os.path.join(folder, 'model.safetensors'))
  text_params = clip_text.from_state_dict({k: v for k, v in stored.items() if k.startswith(('text_model.',
                                                                                            'text_projection.'))},
                                          text_config)
  text_got = np.asarray(jax.jit(clip_text.CLIPTextEncoder(text_config).apply)({'params': text_params},
                                                                              jnp.asarray(ids, jnp.int32)).projected)
  score_got = np.asarray(clip_vision.clip_score(jnp.asarray(image_got), jnp.asarray(text_got)))

  with_projection = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(
      **config['vision_config'], projection_dim=config['projection_dim']))
  with_projection.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in vision.items()}, strict=False)
  with torch.no_grad():
    alone = with_projection.eval()(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2))).image_embeds.numpy()
  results = {'image_embeds': relative(image_got, image_want), 'image_embeds_vision_model': relative(image_got, alone),
             'text_embeds': relative(text_got, text_want), 'clip_score': relative(score_got, score_want)}
  for name, preset in (('clip_l14', clip_vision.CLIP_L14), ('openclip_g14', clip_vision.OPENCLIP_G14)):
    with torch.device('meta'):
      reference = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(
          hidden_size=preset.hidden_size, intermediate_size=preset.intermediate_size,
          num_hidden_layers=preset.num_hidden_layers, num_attention_heads=preset.num_attention_heads,
          image_size=preset.image_size, patch_size=preset.patch_size, hidden_act=preset.hidden_act,
          projection_dim=preset.projection_dim))
    theirs = sum(p.numel() for p in reference.parameters())
    ours = sum(int(np.prod(shape)) for shape in clip_vision.weight_shapes(preset).values())
    results[f'parameters_{name}'] = [ours, theirs]
  print(json.dumps(results))
  if args.golden:
    np.savez_compressed(args.golden, pixels=pixels, ids=ids.astype(np.int32), image_embeds=image_want,
                        text_embeds=text_want, clip_score=score_want,
                        **{f'vision/{k}': v for k, v in vision.items()}, **{f'text/{k}': v for k, v in text.items()})
  failed = [k for k in ('image_embeds', 'image_embeds_vision_model', 'text_embeds', 'clip_score')
            if results[k] > args.tolerance]
  failed += [k for k in results if k.startswith('parameters_') and results[k][0] != results[k][1]]
  if failed:
    sys.exit(f'failed: {failed}')


if __name__ == '__main__':
  main()

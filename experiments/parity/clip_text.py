"""The CLIP text encoders and tokenizer in fewstep_jax against transformers', on random weights and a small
vocabulary.

  PYTHONPATH=. python experiments/parity/clip_text.py [--bigg-layers=32]
  PYTHONPATH=. python experiments/parity/clip_text.py --skip=clip_l,openclip_bigg \\
      --golden=tests/data/clip_text_golden.npz --tokenizer-folders=tests/data/clip_tokenizer

Needs torch and transformers beside fewstep_jax. Encoders: transformers' CLIPTextModel (CLIP ViT-L/14, the published
config of SD 1.5's and SDXL's text_encoder/) and CLIPTextModelWithProjection (OpenCLIP ViT-bigG/14, SDXL's
text_encoder_2/) are built from those configs with `clip_text.random_weights`, and saved as the pipelines publish
them: config.json beside model.safetensors under transformers 4's names (`text_model.` prefix), and beside
model.fp16.safetensors (the fp16 variant); CLIP-L also as transformers 5's save_pretrained writes it (no prefix).
Each folder is loaded with `fewstep_jax.text.load_encoder` and run on the same token ids (SD 1.5's padding with
<|endoftext|> and SDXL tokenizer_2's with '!', id 0): the last hidden state, the penultimate hidden state, the pooled
output and the projection are compared as max |ours - theirs| / max |theirs|; the fp16 files against transformers
run on the same fp16-rounded weights. --bigg-layers < 32 runs bigG with fewer layers (the full count of parameters
is checked from the shapes either way).

Tokenizer: a byte-level BPE vocabulary in CLIP's format (vocab.json with </w> word ends, merges.txt) is trained with
`tokenizers` on a small corpus, written with SD 1.5's and SDXL's tokenizer_config.json, and read by transformers'
CLIPTokenizer and by `fewstep_jax.text.tokenizer`; both encode a list of awkward captions (punctuation, unicode,
whitespace, over-long, empty) to 77 ids with truncation and padding, and must agree id for id.

--golden writes a tiny encoder's reference outputs and the tokenizer's test vocabulary and ids to an .npz (the
default tests read tests/data/clip_text_golden.npz). One JSON line per check; exits non-zero on any failure.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

# What transformers 4 wrote into the published config.json files (the fields that change the computation).
PUBLISHED_CONFIGS = {
    'clip_l': dict(architectures=['CLIPTextModel'], hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                   num_attention_heads=12, max_position_embeddings=77, hidden_act='quick_gelu', vocab_size=49408,
                   projection_dim=768, bos_token_id=0, eos_token_id=2, pad_token_id=1, layer_norm_eps=1e-5),
    'openclip_bigg': dict(architectures=['CLIPTextModelWithProjection'], hidden_size=1280, intermediate_size=5120,
                          num_hidden_layers=32, num_attention_heads=20, max_position_embeddings=77, hidden_act='gelu',
                          vocab_size=49408, projection_dim=1280, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                          layer_norm_eps=1e-5),
}
TINY_CONFIG = dict(architectures=['CLIPTextModelWithProjection'], hidden_size=32, intermediate_size=37,
                   num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=16, hidden_act='quick_gelu',
                   vocab_size=99, projection_dim=24, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                   layer_norm_eps=1e-5)

AWKWARD_CAPTIONS = [
    '', ' ', 'a photo of a cat', 'A PHOTO OF A CAT!!!', "it's the cat's pyjamas, isn't it? they'll've",
    'an astronaut riding a horse on mars, 4k, trending on artstation, (masterpiece:1.2), [[detailed]]',
    'café crème brûlée — naïve façade… “quoted” ‘single’', 'Ελληνικά ΟΔΟΣ σοφία', '東京の夜景、ネオン、雨', '🐱🚀 emoji ❤️‍🔥 test',
    'tabs\tand\nnewlines\r\nand\u00a0nbsp\u3000ideographic\u2028line', 'zero\u200bwidth\u200djoiner', 'İstanbul ǅ ß ﬁ',
    'numbers 1234567890 3.14 1e-5 ½ ² Ⅻ ٣', "'s 'S 'sss ''s x's'", 'hello<|endoftext|>world <|startoftext|>',
    '<|ENDOFTEXT|> <|endoftext', 'multiple     spaces   and trailing   ', 'a!b!!c!!!', '&amp; &lt;b&gt; html',
    'e\u0301 composed vs é', 'word ' * 100, 'supercalifragilisticexpialidocious' * 8, '!' * 90,
    'x\x1cy\x1fz\x0bw\x85v', 'null\x00 bom\ufeff mongolian\u180evowel', "don't DON'T", '1,000,000.00$ €5 #hash @at',
    'ﬀ ligature ǈ titlecase ＦＵＬＬＷＩＤＴＨ', '!hello! !! <|startoftext|>!',
]


def rel(ours, theirs) -> float:
  theirs = np.asarray(theirs, np.float64)
  return float(np.abs(np.asarray(ours, np.float64) - theirs).max() / np.abs(theirs).max())


def token_ids(config: dict, batch: int, pad_id: int, rng) -> np.ndarray:
  """[batch, max positions] ids as a CLIP tokenizer writes them: start, words, end, padding; of several lengths."""
  length, vocab = config['max_position_embeddings'], config['vocab_size']
  ids = np.full((batch, length), pad_id, np.int64)
  for row, words in enumerate(np.linspace(0, length - 2, batch).astype(int)):
    ids[row, 0] = vocab - 2
    ids[row, 1:1 + words] = rng.integers(1, vocab - 2, words)
    ids[row, 1 + words] = vocab - 1
  return ids


def reference_model(config: dict, state_dict: dict):
  """transformers' model of `config` holding the arrays of `state_dict` themselves (no copy: bigG is 2.8 GB)."""
  import torch
  import transformers
  torch_config = transformers.CLIPTextConfig(**{k: v for k, v in config.items() if k != 'architectures'})
  cls = getattr(transformers, config['architectures'][0])
  with torch.device('meta'):
    model = cls(torch_config).eval()
  prefixed = cls is transformers.CLIPTextModelWithProjection
  names = {name if prefixed else name.removeprefix('text_model.'): value for name, value in state_dict.items()}
  model.load_state_dict({name: torch.from_numpy(value) for name, value in names.items()}, strict=True, assign=True)
  for module in model.modules():  # A buffer that is not in the state dict, so still on the meta device.
    if hasattr(module, 'position_ids'):
      module.position_ids = torch.arange(config['max_position_embeddings'])[None]
  return model


def reference_outputs(model, ids: np.ndarray) -> dict:
  import torch
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(ids), output_hidden_states=True)
  pooled = getattr(out, 'pooler_output', None)
  if pooled is None and hasattr(model, 'text_model'):  # transformers 5's WithProjection output lacks it.
    with torch.no_grad():
      pooled = model.text_model(input_ids=torch.from_numpy(ids)).pooler_output
  outputs = {'last_hidden_state': out.last_hidden_state.numpy(), 'penultimate': out.hidden_states[-2].numpy()}
  if pooled is not None:
    outputs['pooled'] = pooled.numpy()
  if getattr(out, 'text_embeds', None) is not None:
    outputs['projected'] = out.text_embeds.numpy()
  return outputs


def our_outputs(folder: str, ids: np.ndarray) -> dict:
  import jax
  from fewstep_jax.nn import clip_text
  encoder, params = clip_text.load(folder)
  out = jax.jit(encoder.apply)({'params': params}, ids.astype(np.int32))
  outputs = {'last_hidden_state': out.last_hidden_state, 'penultimate': out.hidden_states[-2], 'pooled': out.pooled}
  if out.projected is not None:
    outputs['projected'] = out.projected
  return {name: np.asarray(value) for name, value in outputs.items()}


def save_folder(folder: str, config: dict, state_dict: dict, weights_name: str, prefixed: bool = True):
  from safetensors.numpy import save_file
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, 'config.json'), 'w') as file:
    json.dump(dict(config, model_type='clip_text_model', torch_dtype='float32'), file)
  names = state_dict if prefixed else {k.removeprefix('text_model.'): v for k, v in state_dict.items()}
  save_file(names, os.path.join(folder, weights_name))


def compare_encoder(name: str, config: dict, tmp: str, pad_id: int, tolerance: float) -> bool:
  from fewstep_jax.nn import clip_text
  ours_config = clip_text.CLIPTextConfig.from_json(config)
  state_dict = clip_text.random_weights(ours_config, seed=0)
  ids = token_ids(config, 4, pad_id, np.random.default_rng(1))
  ok = True
  layouts = [('model.safetensors', True, np.float32)]
  if config['architectures'] == ['CLIPTextModel']:
    layouts.append(('model.safetensors (transformers 5 names)', False, np.float32))
  layouts.append(('model.fp16.safetensors', True, np.float16))  # Last: it rounds state_dict to float16 in place.
  for layout, prefixed, dtype in layouts:
    folder = os.path.join(tmp, f'{name}_{len(layout)}_{prefixed}')
    save_folder(folder, config, {k: v.astype(dtype, copy=False) for k, v in state_dict.items()},
                layout.split(' ')[0], prefixed)
    for key in state_dict:  # transformers runs on the weights as stored (one array at a time: memory).
      state_dict[key] = state_dict[key].astype(dtype).astype(np.float32)
    model = reference_model(config, state_dict)
    theirs = reference_outputs(model, ids)
    del model
    ours = our_outputs(folder, ids)
    shutil.rmtree(folder)
    errors = {f'{key}_max_relative_error': rel(ours[key], theirs[key]) for key in theirs}
    passed = max(errors.values()) <= tolerance
    ok &= passed
    print(json.dumps({'encoder': name, 'layers': config['num_hidden_layers'], 'file': layout, **errors,
                      'passed': passed}), flush=True)
  return ok


def parameter_counts(name: str, config: dict) -> bool:
  import torch
  import transformers
  from fewstep_jax.nn import clip_text
  with torch.device('meta'):
    model = getattr(transformers, config['architectures'][0])(
        transformers.CLIPTextConfig(**{k: v for k, v in config.items() if k != 'architectures'}))
  theirs = sum(p.numel() for p in model.parameters())
  shapes = clip_text.weight_shapes(clip_text.CLIPTextConfig.from_json(config))
  ours = sum(int(np.prod(shape)) for shape in shapes.values())
  print(json.dumps({'encoder': name, 'transformers_parameters': theirs, 'port_parameters': ours,
                    'equal': ours == theirs}), flush=True)
  return ours == theirs


CORPUS = (' '.join(AWKWARD_CAPTIONS[2:10]) + ' a photo of an astronaut riding a horse, a painting of a cat sitting on '
          'the table, the quick brown fox jumps over the lazy dog, highly detailed digital art, oil on canvas '
          'portrait of a woman, 3d render, cinematic lighting, ultra realistic, photograph of mountains at sunset')
# The padding token as SD 1.5's tokenizer/ and SDXL's tokenizer_2/ publish it; the special tokens as AddedTokens
# (normalized) in special_tokens_map.json and tokenizer_config.json, and in the second form of tokenizer_2 also in an
# added_tokens_decoder, as transformers 4.34 and later save it.
TOKENIZER_CONFIGS = {
    'sd15_tokenizer': ('<|endoftext|>', False),
    'sdxl_tokenizer_2': ('!', False),
    'sdxl_tokenizer_2_added_tokens_decoder': ('!', True),
}


def train_vocabulary(corpus: str, merges: int):
  """(vocab, merges) in CLIP's layout: the 256 byte characters, the same with </w>, each merge's result in order,
  then <|startoftext|> and <|endoftext|>; the merges are the most frequent pairs of the corpus's words."""
  import collections
  from fewstep_jax.text import tokenizer
  chars = tokenizer.byte_characters()
  words = collections.Counter(tuple(chars[b] for b in w.encode()) for w in tokenizer.split_words(
      tokenizer.normalize(corpus)))
  words = collections.Counter({w[:-1] + (w[-1] + '</w>',): n for w, n in words.items()})
  learned = []
  for _ in range(merges):
    pairs = collections.Counter()
    for word, count in words.items():
      for pair in zip(word, word[1:]):
        pairs[pair] += count
    if not pairs:
      break
    best = max(pairs.items(), key=lambda item: (item[1], item[0]))[0]
    learned.append(best)
    merged = collections.Counter()
    for word, count in words.items():
      out, i = [], 0
      while i < len(word):
        if word[i:i + 2] == best:
          out.append(word[i] + word[i + 1])
          i += 2
        else:
          out.append(word[i])
          i += 1
      merged[tuple(out)] += count
    words = merged
  chars = sorted(chars)  # CLIP's order: the printable bytes ('!' is id 0), then the others.
  tokens = list(chars) + [c + '</w>' for c in chars] + [a + b for a, b in learned]
  tokens += ['<|startoftext|>', '<|endoftext|>']
  return {token: i for i, token in enumerate(dict.fromkeys(tokens))}, learned


def write_tokenizer_folder(folder: str, vocab: dict, merges: list, pad_token: str, added_tokens_decoder: bool):
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, 'vocab.json'), 'w', encoding='utf-8') as file:
    json.dump(vocab, file, ensure_ascii=False)
  with open(os.path.join(folder, 'merges.txt'), 'w', encoding='utf-8') as file:
    file.write('#version: 0.2\n' + ''.join(f'{a} {b}\n' for a, b in merges))
  added = lambda token: {'content': token, 'lstrip': False, 'normalized': True, 'rstrip': False,
                         'single_word': False}
  with open(os.path.join(folder, 'special_tokens_map.json'), 'w') as file:
    json.dump({'bos_token': added('<|startoftext|>'), 'eos_token': added('<|endoftext|>'), 'pad_token': pad_token,
               'unk_token': added('<|endoftext|>')}, file)
  config = {'add_prefix_space': False, 'bos_token': added('<|startoftext|>'), 'do_lower_case': True,
            'eos_token': added('<|endoftext|>'), 'errors': 'replace', 'model_max_length': 77, 'pad_token': pad_token,
            'tokenizer_class': 'CLIPTokenizer', 'unk_token': added('<|endoftext|>')}
  if added_tokens_decoder:  # As transformers 4.34 and later save it: strings, the flags in added_tokens_decoder.
    config.update(bos_token='<|startoftext|>', eos_token='<|endoftext|>', unk_token='<|endoftext|>')
    config['added_tokens_decoder'] = {
        str(vocab['!']): dict(added('!'), normalized=False, special=True),
        str(vocab['<|startoftext|>']): dict(added('<|startoftext|>'), special=True),
        str(vocab['<|endoftext|>']): dict(added('<|endoftext|>'), normalized=False, special=True)}
  with open(os.path.join(folder, 'tokenizer_config.json'), 'w') as file:
    json.dump(config, file)


def compare_tokenizers(root: str) -> tuple:
  """(whether all agree, {folder name: ids}): the ids of transformers' CLIPTokenizer and fewstep_jax's on
  AWKWARD_CAPTIONS, for each of TOKENIZER_CONFIGS, whose folders are written under `root`."""
  import transformers
  from fewstep_jax.text import tokenizer
  vocab, merges = train_vocabulary(CORPUS, 300)
  ok, ids = True, {}
  for name, (pad_token, added_tokens_decoder) in TOKENIZER_CONFIGS.items():
    folder = os.path.join(root, name)
    write_tokenizer_folder(folder, vocab, merges, pad_token, added_tokens_decoder)
    theirs = transformers.CLIPTokenizer.from_pretrained(folder)
    want = np.asarray(theirs(AWKWARD_CAPTIONS, padding='max_length', max_length=77, truncation=True)['input_ids'])
    ours = tokenizer.CLIPTokenizer.from_folder(folder)
    got = ours(AWKWARD_CAPTIONS)
    ids[name] = want
    differing = [caption for caption, a, b in zip(AWKWARD_CAPTIONS, want, got) if not np.array_equal(a, b)]
    for caption in differing[:5]:
      row = AWKWARD_CAPTIONS.index(caption)
      print(json.dumps({'caption': caption, 'transformers': want[row].tolist(), 'ours': got[row].tolist()}))
    ok &= not differing
    print(json.dumps({'tokenizer': name, 'vocabulary': len(vocab), 'captions': len(AWKWARD_CAPTIONS),
                      'differing_captions': len(differing), 'pad_id': int(want[0, -1]),
                      'over_long_captions': sum(len(ours.encode(c)) > 77 for c in AWKWARD_CAPTIONS),
                      'passed': not differing}))
  return ok, ids


def write_golden(path: str, tokenizer_ids: dict, tolerance: float) -> bool:
  """The tiny encoder's transformers outputs on two rows of ids, and the tokenizers' ids, to `path`."""
  from fewstep_jax.nn import clip_text
  seed = 3
  state_dict = clip_text.random_weights(clip_text.CLIPTextConfig.from_json(TINY_CONFIG), seed)
  ids = token_ids(TINY_CONFIG, 2, 0, np.random.default_rng(4))
  theirs = reference_outputs(reference_model(TINY_CONFIG, state_dict), ids)
  with tempfile.TemporaryDirectory() as tmp:
    save_folder(tmp, TINY_CONFIG, state_dict, 'model.safetensors')
    ours = our_outputs(tmp, ids)
  errors = {f'{key}_max_relative_error': rel(ours[key], theirs[key]) for key in theirs}
  np.savez_compressed(path, input_ids=ids.astype(np.int32), weights_seed=seed, config=json.dumps(TINY_CONFIG),
                      captions=np.asarray(AWKWARD_CAPTIONS), **theirs,
                      **{f'ids_{name}': value.astype(np.int32) for name, value in tokenizer_ids.items()})
  passed = max(errors.values()) <= tolerance
  print(json.dumps({'golden': path, 'bytes': os.path.getsize(path), 'encoder': 'tiny', **errors, 'passed': passed}))
  return passed

def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--bigg-layers', type=int, default=32, help='layers of the bigG encoder run (32 published)')
  parser.add_argument('--skip', default='', help='comma-separated checks to skip: clip_l, openclip_bigg, tokenizer')
  parser.add_argument('--tolerance', type=float, default=1e-5)
  parser.add_argument('--golden', default='', help='also write the tiny encoder\'s and the tokenizer\'s reference '
                      'outputs to this .npz (tests/data/clip_text_golden.npz is written so)')
  parser.add_argument('--tokenizer-folders', default='', help='write the tokenizer folders of the check here '
                      '(tests/data/clip_tokenizer holds those the tests read) instead of a temporary folder')
  args = parser.parse_args()
  import jax
  import torch
  import transformers
  jax.config.update('jax_default_matmul_precision', 'highest')
  print(json.dumps({'torch': torch.__version__, 'transformers': transformers.__version__, 'jax': jax.__version__}))
  skip = set(filter(None, args.skip.split(',')))
  ok = True
  with tempfile.TemporaryDirectory() as tmp:
    for name, pad_id in (('clip_l', 49407), ('openclip_bigg', 0)):
      ok &= parameter_counts(name, PUBLISHED_CONFIGS[name])
      if name in skip:
        continue
      config = dict(PUBLISHED_CONFIGS[name])
      if name == 'openclip_bigg':
        config['num_hidden_layers'] = args.bigg_layers
      ok &= compare_encoder(name, config, tmp, pad_id, args.tolerance)
    if 'tokenizer' not in skip or args.golden:
      agree, ids = compare_tokenizers(args.tokenizer_folders or tmp)
      ok &= agree
    if args.golden:
      ok &= write_golden(args.golden, ids, args.tolerance)
  print(json.dumps({'passed': bool(ok)}))
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  main()

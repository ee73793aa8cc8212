"""CLIP text encoders and tokenizer: a tiny encoder gives the outputs recorded from transformers' CLIPTextModelWith-
Projection, the tokenizer the ids recorded from transformers' CLIPTokenizer on awkward captions, under each padding
rule (experiments/parity/clip_text.py wrote both, and compares CLIP-L and bigG at full size); published files load in
each layout, and wrong ones are refused in one line naming the weight."""
import json
import os
import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from fewstep_jax import errors, text
from fewstep_jax.nn import clip_text
from fewstep_jax.text import tokenizer as tokenizer_lib

DATA = os.path.join(os.path.dirname(__file__), 'data')
GOLDEN = os.path.join(DATA, 'clip_text_golden.npz')
TOKENIZERS = os.path.join(DATA, 'clip_tokenizer')


@pytest.fixture(scope='module')
def golden():
  with np.load(GOLDEN) as stored:
    return {name: stored[name] for name in stored.files}


def _config(golden) -> dict:
  return json.loads(str(golden['config']))


def _write_encoder(folder, config: dict, state_dict: dict, name='model.safetensors'):
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, 'config.json'), 'w') as file:
    json.dump(config, file)
  save_file(state_dict, os.path.join(folder, name))
  return str(folder)


def _weights(golden):
  return clip_text.random_weights(clip_text.CLIPTextConfig.from_json(_config(golden)), int(golden['weights_seed']))


def test_encoder_equals_transformers_clip_text_model_with_projection(golden, tmp_path):
  folder = _write_encoder(tmp_path / 'text_encoder_2', _config(golden), _weights(golden))
  encoder, params = clip_text.load(folder)
  out = jax.jit(encoder.apply)({'params': params}, golden['input_ids'])
  for ours, name in ((out.last_hidden_state, 'last_hidden_state'), (out.hidden_states[-2], 'penultimate'),
                     (out.pooled, 'pooled'), (out.projected, 'projected')):
    theirs = golden[name]
    assert np.abs(np.asarray(ours) - theirs).max() / np.abs(theirs).max() < 1e-5, name
  # SD 1.5's clip_skip: the final layer norm of an earlier state; of the last one it is the last hidden state.
  normed = encoder.apply({'params': params}, out.hidden_states[-1], method=encoder.final_layer_norm)
  np.testing.assert_allclose(normed, out.last_hidden_state, atol=1e-6)


def test_published_layouts_load_the_same_parameters(golden, tmp_path):
  state_dict = _weights(golden)
  config = dict(_config(golden), architectures=['CLIPTextModel'])
  without_projection = {k: v for k, v in state_dict.items() if k != 'text_projection.weight'}
  _, reference = clip_text.load(_write_encoder(tmp_path / 'v4', config, without_projection))
  # transformers 5 saves a CLIPTextModel without the text_model. prefix; older files hold the position_ids buffer.
  v5 = {k.removeprefix('text_model.'): v for k, v in without_projection.items()}
  _, params = clip_text.load(_write_encoder(tmp_path / 'v5', config, v5))
  assert jax.tree.all(jax.tree.map(np.array_equal, params, reference))
  old = dict(without_projection, **{'text_model.embeddings.position_ids': np.arange(16)[None]})
  _, params = clip_text.load(_write_encoder(tmp_path / 'old', config, old))
  assert jax.tree.all(jax.tree.map(np.array_equal, params, reference))
  half = {k: v.astype(np.float16) for k, v in without_projection.items()}
  _, params = clip_text.load(_write_encoder(tmp_path / 'fp16', config, half, 'model.fp16.safetensors'))
  assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(params))
  np.testing.assert_array_equal(params['text_model']['final_layer_norm']['weight'],
                                half['text_model.final_layer_norm.weight'].astype(np.float32))


def test_pytorch_model_bin_is_read_without_running_code(golden, tmp_path):
  import torch_format
  state_dict = _weights(golden)
  folder = _write_encoder(tmp_path / 'text_encoder_2', _config(golden), state_dict)
  _, reference = clip_text.load(folder)
  os.remove(os.path.join(folder, 'model.safetensors'))
  torch_format.save_zip(state_dict, os.path.join(folder, 'pytorch_model.bin'))
  _, params = clip_text.load(folder)
  assert jax.tree.all(jax.tree.map(np.array_equal, params, reference))
  marker = tmp_path / 'ran'
  torch_format.save_code_running_pickle(os.path.join(folder, 'pytorch_model.bin'), str(marker))
  with pytest.raises(errors.RefusedWeightsError, match=r'pytorch_model\.bin: loading it would call') as raised:
    clip_text.load(folder)
  assert '\n' not in str(raised.value) and not marker.exists()


def test_pooling_follows_transformers_eos_rule():
  ids = np.array([[49406, 5, 49407, 49407], [49406, 7, 8, 49407]])
  np.testing.assert_array_equal(clip_text.eos_positions(ids, 2), [2, 3])  # The published configs: the largest id.
  padded_with_zero = np.array([[49406, 5, 49407, 0], [49406, 300, 9, 49407]])
  np.testing.assert_array_equal(clip_text.eos_positions(padded_with_zero, 49407), [2, 3])  # The first end token.
  np.testing.assert_array_equal(clip_text.eos_positions(np.array([[3, 9, 2, 9]]), 2), [1])


def test_published_presets_have_the_published_parameter_counts():
  count = lambda config: sum(int(np.prod(s)) for s in clip_text.weight_shapes(config).values())
  assert count(clip_text.CLIP_L) == 123_060_480  # transformers' CLIPTextModel with the CLIP ViT-L/14 config.
  assert count(clip_text.OPENCLIP_BIGG) == 694_659_840  # CLIPTextModelWithProjection with SDXL's text_encoder_2 config.


@pytest.mark.parametrize('change, expected', [
    (lambda sd: sd.pop('text_model.encoder.layers.1.mlp.fc1.bias'),
     "missing ['text_model.encoder.layers.1.mlp.fc1.bias'] (1), unexpected [] (0), misshapen [] (0)"),
    (lambda sd: sd.update({'text_model.extra.weight': np.zeros(3, np.float32)}),
     "missing [] (0), unexpected ['text_model.extra.weight'] (1), misshapen [] (0)"),
    (lambda sd: sd.update({'text_projection.weight': np.zeros((7, 32), np.float32)}),
     "misshapen ['text_projection.weight (7, 32) (expected (24, 32))'] (1)"),
])
def test_wrong_weights_are_named_in_one_line(golden, tmp_path, change, expected):
  state_dict = _weights(golden)
  change(state_dict)
  folder = _write_encoder(tmp_path / 'text_encoder', _config(golden), state_dict)
  with pytest.raises(errors.ConfigError) as raised:
    clip_text.load(folder)
  message = str(raised.value)
  assert '\n' not in message and expected in message and 'model.safetensors does not match' in message
  assert 'config.json must describe these weights' in message


def test_unreadable_or_absent_files_are_one_line_errors(golden, tmp_path):
  folder = _write_encoder(tmp_path / 'text_encoder', _config(golden), _weights(golden))
  with open(os.path.join(folder, 'model.safetensors'), 'r+b') as file:
    file.truncate(100)  # A partial download.
  with pytest.raises(errors.UnreadableWeightsError, match=r'cannot be read as a \.safetensors file') as raised:
    clip_text.load(folder)
  assert '\n' not in str(raised.value)
  os.remove(os.path.join(folder, 'model.safetensors'))
  with pytest.raises(errors.InputNotFoundError, match=r'holds none of model\.safetensors, model\.fp16\.safetensors'):
    clip_text.load(folder)
  with pytest.raises(errors.InputNotFoundError, match='is not a folder; nothing is downloaded'):
    clip_text.load(str(tmp_path / 'absent'))
  save_file(_weights(golden), os.path.join(folder, 'model.fp16.safetensors'))
  with open(os.path.join(folder, 'config.json'), 'w') as file:
    file.write('{not json')
  with pytest.raises(errors.ConfigError, match='config.json cannot be read as JSON'):
    clip_text.load(folder)
  with open(os.path.join(folder, 'config.json'), 'w') as file:
    json.dump(dict(_config(golden), hidden_act='relu'), file)
  with pytest.raises(errors.ConfigError, match="hidden_act 'relu' is not ported"):
    clip_text.load(folder)


@pytest.mark.parametrize('name, pad_id', [('sd15_tokenizer', 790), ('sdxl_tokenizer_2', 0),
                                          ('sdxl_tokenizer_2_added_tokens_decoder', 0)])
def test_tokenizer_gives_transformers_ids_on_awkward_captions(golden, name, pad_id):
  tokenizer = text.CLIPTokenizer.from_folder(os.path.join(TOKENIZERS, name))
  captions = [str(caption) for caption in golden['captions']]
  ids = tokenizer(captions)
  np.testing.assert_array_equal(ids, golden[f'ids_{name}'])
  assert ids.shape == (len(captions), 77) and ids.dtype == np.int32
  empty = ids[captions.index('')]
  assert empty[:2].tolist() == [789, 790] and (empty[2:] == pad_id).all()  # Start, end, then the padding.
  over_long = ids[captions.index('word ' * 100)]
  assert over_long[0] == 789 and over_long[-1] == 790 and pad_id not in over_long[1:-1].tolist()  # The end kept.


def test_tokenizer_special_tokens_written_in_captions():
  sd15 = text.CLIPTokenizer.from_folder(os.path.join(TOKENIZERS, 'sd15_tokenizer'))
  sdxl = text.CLIPTokenizer.from_folder(os.path.join(TOKENIZERS, 'sdxl_tokenizer_2'))
  assert sd15.encode('<|endoftext|>') == [789, 790, 790]
  # Normalised special tokens (as SDXL's tokenizer_2 marks them) match upper case; SD 1.5's pad token is not so.
  assert sdxl.encode('<|ENDOFTEXT|>') == [789, 790, 790]
  assert sd15.encode('<|ENDOFTEXT|>') == [789] + sd15.encode('<|')[1:-1] + sd15.encode('endoftext')[1:-1] + \
      sd15.encode('|>')[1:-1] + [790]
  assert sdxl.encode('!') == [789, 0, 790] and sd15.encode('!') == [789, sd15.vocab['!</w>'], 790]


def test_tokenizer_rules():
  assert tokenizer_lib.normalize('A\u00a0\u3000B\tΣ') == 'a b σ'  # White space runs, lower case per character.
  assert tokenizer_lib.split_words("it's 12ab, x!!'s") == ["it", "'s", '1', '2', 'ab', ',', 'x', "!!'", 's']
  assert tokenizer_lib.split_words('a\x1cb') == ['a', '\x1c', 'b']  # Not Unicode White_Space.
  assert len(set(tokenizer_lib.byte_characters())) == 256 and tokenizer_lib.byte_characters()[ord('!')] == '!'


def test_tokenizer_folder_errors(tmp_path):
  with pytest.raises(errors.InputNotFoundError, match=r'vocab\.json not found; nothing is downloaded'):
    text.CLIPTokenizer.from_folder(str(tmp_path))
  folder = shutil.copytree(os.path.join(TOKENIZERS, 'sd15_tokenizer'), tmp_path / 'tokenizer')
  with open(folder / 'merges.txt', 'a') as file:
    file.write('one two three\n')
  with pytest.raises(errors.ConfigError, match=r"merges\.txt line 2\d\d is not a merge \"left right\": 'one two thr"):
    text.CLIPTokenizer.from_folder(str(folder))
  shutil.copy(os.path.join(TOKENIZERS, 'sd15_tokenizer', 'merges.txt'), folder / 'merges.txt')
  vocab = json.loads((folder / 'vocab.json').read_text())
  del vocab['<|endoftext|>']
  (folder / 'vocab.json').write_text(json.dumps(vocab))
  with pytest.raises(errors.ConfigError, match=r"lacks the special tokens \['<\|endoftext\|>'\]"):
    text.CLIPTokenizer.from_folder(str(folder))


def _pipeline(tmp_path, golden, with_encoder_2: bool):
  """A pipeline folder of tiny encoders with the test vocabulary (791 tokens, 77 positions)."""
  config = dict(_config(golden), vocab_size=791, max_position_embeddings=77)
  shapes = clip_text.CLIPTextConfig.from_json(dict(config, architectures=['CLIPTextModel']))
  _write_encoder(tmp_path / 'text_encoder', dict(config, architectures=['CLIPTextModel']),
                 clip_text.random_weights(shapes, 0))
  shutil.copytree(os.path.join(TOKENIZERS, 'sd15_tokenizer'), tmp_path / 'tokenizer')
  if with_encoder_2:
    _write_encoder(tmp_path / 'text_encoder_2', dict(config, hidden_size=40),
                   clip_text.random_weights(clip_text.CLIPTextConfig.from_json(dict(config, hidden_size=40)), 1))
    shutil.copytree(os.path.join(TOKENIZERS, 'sdxl_tokenizer_2'), tmp_path / 'tokenizer_2')
  return str(tmp_path)


def test_sd15_condition_is_the_last_hidden_state(golden, tmp_path):
  encoder = text.load_encoder(os.path.join(_pipeline(tmp_path, golden, False), 'text_encoder'))
  assert encoder.condition == 'sd15'
  prompts = ['a photo of a cat', '']
  states, pooled = encoder.encode(prompts)
  out = encoder.module.apply({'params': encoder.params}, encoder.tokenizer(prompts))
  assert pooled is None and states.shape == (2, 77, 32)
  np.testing.assert_allclose(states, out.last_hidden_state, rtol=1e-5, atol=1e-5)  # jit vs eager.


def test_sdxl_condition_concatenates_penultimate_states_and_takes_the_projection(golden, tmp_path):
  encoders = text.load_pipeline(_pipeline(tmp_path, golden, True))
  assert [e.condition for e in encoders] == ['sdxl', 'sdxl'] and encoders[1].tokenizer.special_ids['pad_token'] == 0
  prompts = ['a photo of a cat', 'the quick brown fox']
  states, pooled = text.encode(encoders, prompts)
  assert states.shape == (2, 77, 32 + 40) and pooled.shape == (2, 24)
  second = encoders[1].module.apply({'params': encoders[1].params}, encoders[1].tokenizer(prompts))
  np.testing.assert_allclose(states[..., 32:], second.hidden_states[-2], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(pooled, second.projected, rtol=1e-5, atol=1e-5)


def test_encoder_folder_errors(golden, tmp_path):
  with pytest.raises(errors.InputNotFoundError, match='text_encoder not found; nothing is downloaded'):
    text.load_pipeline(str(tmp_path))
  with pytest.raises(errors.ConfigError, match='name its tokenizer folder'):
    text.load_encoder(str(tmp_path / 'my_encoder'))
  with pytest.raises(errors.ConfigError, match="condition 'sd3' is not known"):
    text.load_encoder(str(tmp_path / 'text_encoder'), condition='sd3')
  pipeline = _pipeline(tmp_path, golden, False)
  shutil.copytree(os.path.join(TOKENIZERS, 'sd15_tokenizer'), tmp_path / 'other_tokenizer')
  with open(tmp_path / 'other_tokenizer' / 'tokenizer_config.json', 'w') as file:
    json.dump({'model_max_length': 78}, file)
  with pytest.raises(errors.ConfigError, match=r'\(ids up to 790, 78 tokens\) does not fit the encoder in .*'
                     r'\(vocab_size 791, max_position_embeddings 77\): pass the tokenizer folder of the same pipeline'):
    text.load_encoder(os.path.join(pipeline, 'text_encoder'), str(tmp_path / 'other_tokenizer'))

"""encode_latents on image-caption sets and prompt lists: a caption folder, a JSONL and a COCO-style JSON encoded with
tiny random CLIP pipelines (SD 1.5 and SDXL layouts), read back by the 'latents' source as text conditions equal to
fewstep_jax.text.encode of the same captions; resumed after a lost shard; one caption drawn per image per step;
prompts alone for data-free methods; and each bad input refused in one line."""
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import error_line, run_main
from fewstep_jax import errors, text
from fewstep_jax.data import build_data, data_defaults
from fewstep_jax.data import latents as latents_lib
from fewstep_jax.methods import method_defaults, require_data_images
from fewstep_jax.nn import sd_vae
from fewstep_jax.tools import caption_sets
from fewstep_jax.tools.encode_latents import TextEncoding, center_crop_box, encode_dataset
from test_clip_text import GOLDEN, _pipeline

SMALL_VAE = dict(block_out_channels=(8, 16), layers_per_block=1)
SIZES = ((14, 10), (10, 16), (9, 9))  # (width, height): not square, not the crop size.
CAPTIONS = (['a red cat', 'a cat on a mat'], ['the quick brown fox'], ['one', 'two', 'three'])


def _image(path, size, seed):
  Image.fromarray(np.random.default_rng(seed).integers(0, 256, size[::-1] + (3,), dtype=np.uint8)).save(path)


@pytest.fixture(scope='module')
def sets(tmp_path_factory):
  """A caption folder, a JSONL, a COCO JSON over the same three images; a VAE; SD 1.5 and SDXL pipeline folders."""
  root = tmp_path_factory.mktemp('captions')
  os.makedirs(root / 'folder' / 'b')
  names = ['a.png', 'b/b.png', 'c.jpg']
  for i, (name, size, captions) in enumerate(zip(names, SIZES, CAPTIONS)):
    _image(root / 'folder' / name, size, i)
    with open(root / 'folder' / (os.path.splitext(name)[0] + '.txt'), 'w') as file:
      file.write('\n'.join(captions) + '\n\n')
  with open(root / 'folder' / 'set.jsonl', 'w') as file:  # A relative path per line; captions of a, in two lines.
    file.write(json.dumps({'image': 'a.png', 'caption': CAPTIONS[0][0]}) + '\n')
    file.write(json.dumps({'image': 'b/b.png', 'captions': CAPTIONS[1]}) + '\n')
    file.write(json.dumps({'image': 'a.png', 'caption': CAPTIONS[0][1]}) + '\n')
    file.write(json.dumps({'image': 'c.jpg', 'captions': CAPTIONS[2]}) + '\n')
  coco = {'images': [{'id': 7 + i, 'file_name': name} for i, name in enumerate(names)],
          'annotations': [{'id': 100 + k, 'image_id': 7 + i, 'caption': c} for i, captions in enumerate(CAPTIONS)
                          for k, c in enumerate(captions)]}
  with open(root / 'captions_train2014.json', 'w') as file:
    json.dump(coco, file)
  vae = sd_vae.SDVAE(**SMALL_VAE)
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda leaf: (0.2 * rng.standard_normal(leaf.shape)).astype(np.float32),
                        sd_vae.abstract_params(vae, image_size=8))
  from safetensors.numpy import save_file
  save_file(sd_vae.to_state_dict(params), str(root / 'vae.safetensors'))
  with np.load(GOLDEN) as golden:
    golden = {name: golden[name] for name in golden.files}
  sd15 = _pipeline(root / 'sd15', golden, False)
  sdxl = _pipeline(root / 'sdxl', golden, True)
  return root, vae, params, sd15, sdxl


def _config(out, **changes):
  config = data_defaults()
  config.update(name='latents', latents_dir=str(out), **changes)
  return config


def _records(out) -> dict:
  source = latents_lib.open_source(str(out), latents_lib.latent_norm(data_defaults()))
  return source.read_arrays(np.arange(len(source)))


def test_caption_folder_with_sd15_reads_back_as_text_conditions_and_resumes(sets, tmp_path):
  root, vae, params, sd15, _ = sets
  out = tmp_path / 'latents'
  folder = caption_sets.CaptionFolder(str(root / 'folder'))
  assert [len(folder.captions(i)) for i in range(3)] == [2, 1, 3]
  encoding = TextEncoding.load(sd15, eval_prompts=('a dog', 'a bird', 'a fish'))
  lines = []
  info = encode_dataset(folder, vae, params, str(out), image_size=8, shard_size=2, batch_size=2, text=encoding,
                        log=lines.append)
  # 8 bytes of label and count, 2 x 4 x 4 x 4 float32 moments, 3 captions of 77 x 32 float16 token states.
  assert info['text']['max_captions'] == 3 and f'({8 + 2 * 64 * 4 + 3 * 77 * 32 * 2} bytes a record)' in lines[0]
  records = _records(out)
  np.testing.assert_array_equal(records['count'], [2, 1, 3])
  for i, captions in enumerate(CAPTIONS):
    states, _ = text.encode(encoding.encoders, captions)
    np.testing.assert_allclose(records['tokens'][i, :len(captions)].astype(np.float32), states, rtol=2e-3, atol=2e-3)
    assert not records['tokens'][i, len(captions):].any()
  assert 'pooled' not in records and 'time_ids' not in records

  # A lost shard is encoded again, to the same bytes; other arguments are refused.
  shards = sorted(name for name in os.listdir(out) if name.startswith('records-'))
  lost = out / shards[1]
  lost_bytes = lost.read_bytes()
  os.remove(lost)
  encode_dataset(folder, vae, params, str(out), image_size=8, shard_size=2, batch_size=2, text=encoding,
                 log=lines.append)
  assert "1 of this process's 2 already written" in lines[-2] and lost.read_bytes() == lost_bytes
  with pytest.raises(ValueError, match='other arguments .*text'):
    encode_dataset(folder, vae, params, str(out), image_size=8, shard_size=2, batch_size=2, log=lines.append,
                   text=TextEncoding.load(sd15, dtype='float32'))

  data = build_data(_config(out), global_batch_size=3, seed=0)
  conditioning = data.conditioning
  assert conditioning.kind == 'text' and data.num_classes == 0 and data.has_images
  empty, _ = text.encode(encoding.encoders, [''])
  np.testing.assert_allclose(conditioning.null_text['tokens'], empty[0], rtol=1e-6)  # SD 1.5: the empty prompt's.
  np.testing.assert_allclose(conditioning.prompts['tokens'], text.encode(encoding.encoders, ['a dog', 'a bird',
                                                                                            'a fish'])[0], rtol=1e-6)
  assert data.prompt_texts() == ['a dog', 'a bird', 'a fish']  # Stored as text too, for the CLIP score.
  batch = data.next_batch()
  assert set(batch) == {'x', 'x_std', 'y'} and set(batch['y']) == {'tokens'}
  assert batch['y']['tokens'].shape == (3, 77, 32) and batch['y']['tokens'].dtype == np.float16
  on_device = data.on_device(jax.random.key(0), jax.tree.map(jax.numpy.asarray, batch))
  assert on_device['y']['tokens'].dtype == np.float32 and set(on_device) == {'x', 'y'}
  every = {tuple(np.round(row.astype(np.float32)[1, :4], 2)): i for i in range(3) for row in
           records['tokens'][i, :records['count'][i]]}
  assert all(tuple(np.round(row.astype(np.float32)[1, :4], 2)) in every for row in batch['y']['tokens'])

  # data.prompts_file: encoded at startup with the directory's encoders.
  (tmp_path / 'prompts.txt').write_text('a tree\n\na house\n')
  again = build_data(_config(out, prompts_file=str(tmp_path / 'prompts.txt')), global_batch_size=3, seed=0)
  np.testing.assert_allclose(again.conditioning.prompts['tokens'], text.encode(encoding.encoders,
                                                                               ['a tree', 'a house'])[0], rtol=1e-6)
  assert again.prompt_texts() == ['a tree', 'a house']


def test_jsonl_and_coco_with_sdxl_store_pooled_outputs_time_ids_and_zeros_as_null(sets, tmp_path):
  root, vae, params, _, sdxl = sets
  encoding = TextEncoding.load(sdxl)
  jsonl = caption_sets.CaptionJsonl(str(root / 'folder' / 'set.jsonl'))
  coco = caption_sets.CocoCaptions(str(root / 'captions_train2014.json'), str(root / 'folder'))
  for source in (jsonl, coco):
    assert [source.captions(i) for i in range(3)] == list(CAPTIONS)
  out = tmp_path / 'coco'
  info = encode_dataset(coco, vae, params, str(out), image_size=8, shard_size=4, batch_size=4, flip=True,
                        text=encoding, log=lambda line: None)
  assert info['text']['null'] == 'zeros' and info['text']['pooled'] == 24 and info['num_examples'] == 6
  records = _records(out)
  for i, captions in enumerate(CAPTIONS):
    states, pooled = text.encode(encoding.encoders, captions)
    for view in (2 * i, 2 * i + 1):  # The image and its mirror share the captions.
      np.testing.assert_allclose(records['tokens'][view, :len(captions)].astype(np.float32), states, rtol=2e-3,
                                 atol=2e-3)
      np.testing.assert_allclose(records['pooled'][view, :len(captions)], pooled, rtol=1e-5, atol=1e-6)
  # time_ids: (original h, w, crop top, left, 8, 8), the crop's corner in the resized image. a.png, 14 x 10 -> 11 x 8:
  # left (11 - 8) // 2 = 1, and of the mirror 11 - 8 - 1 = 2; b.png, 10 x 16 -> 8 x 13: top 2 either way.
  np.testing.assert_array_equal(records['time_ids'][:4], [[10, 14, 0, 1, 8, 8], [10, 14, 0, 2, 8, 8],
                                                          [16, 10, 2, 0, 8, 8], [16, 10, 2, 0, 8, 8]])
  data = build_data(_config(out), global_batch_size=2, seed=0)
  null = data.conditioning.null_text
  assert set(null) == {'tokens', 'pooled', 'time_ids'} and not null['tokens'].any() and not null['pooled'].any()
  assert set(data.next_batch()['y']) == {'tokens', 'pooled', 'time_ids'}


def test_one_caption_is_drawn_per_image_per_step_reproducibly():
  counts = np.array([2, 1, 3, 5])
  tokens = np.zeros((4, 5, 1, 1), np.float16)
  tokens[:, :, 0, 0] = np.arange(5)  # Caption k of every image is the value k.
  batch = {'count': counts, 'tokens': tokens}
  draws = np.stack([latents_lib.draw_captions(batch, np.random.default_rng([0, 0, step]))['y']['tokens'][:, 0, 0]
                    for step in range(200)])
  for image, count in enumerate(counts):
    assert set(draws[:, image].astype(int)) == set(range(count))  # Every caption appears, no padding row.
  again = latents_lib.draw_captions(batch, np.random.default_rng([0, 0, 7]))['y']['tokens'][:, 0, 0]
  np.testing.assert_array_equal(again, draws[7])


def test_the_source_draws_the_same_captions_after_a_restored_state(sets, tmp_path):
  root, vae, params, sd15, _ = sets
  out = tmp_path / 'latents'
  encode_dataset(caption_sets.CaptionFolder(str(root / 'folder')), vae, params, str(out), image_size=8,
                 shard_size=3, batch_size=3, text=TextEncoding.load(sd15), log=lambda line: None)
  data = build_data(_config(out), global_batch_size=3, seed=5)
  data.next_batch()
  state = data.get_state()
  assert state['captions_drawn'] == 1
  following = [data.next_batch()['y']['tokens'] for _ in range(4)]
  resumed = build_data(_config(out), global_batch_size=3, seed=5)
  resumed.set_state(state)
  for expected in following:
    np.testing.assert_array_equal(resumed.next_batch()['y']['tokens'], expected)


def test_prompts_alone_train_data_free_methods_only(sets, tmp_path):
  _, _, _, _, sdxl = sets
  (tmp_path / 'prompts.jsonl').write_text('{"prompt": "a red cat"}\n{"caption": "a blue dog"}\n')
  out = tmp_path / 'prompts'
  encoding = TextEncoding.load(sdxl)
  info = encode_dataset(caption_sets.PromptList(str(tmp_path / 'prompts.jsonl')), None, None, str(out),
                        image_size=64, shard_size=8, batch_size=2, text=encoding, log=lambda line: None)
  assert info['moments'] is False and info['shape'] == [8, 8, 4]
  config = _config(out)
  data = build_data(config, global_batch_size=2, seed=0)
  assert not data.has_images and data.data_shape == (8, 8, 4)
  batch = data.next_batch()
  assert set(batch) == {'y'}
  np.testing.assert_array_equal(batch['y']['time_ids'], [[64, 64, 0, 0, 64, 64]] * 2)
  states, _ = text.encode(encoding.encoders, ['a red cat', 'a blue dog'])
  assert min(np.abs(batch['y']['tokens'][0].astype(np.float32) - s).max() for s in np.asarray(states)) < 2e-3

  run = data_defaults()
  for name, gan_weight, refused in (('sid', 0.0, False), ('dmd2', 0.0, False), ('dmd2', 0.01, True),
                                    ('edm', None, True)):
    import ml_collections
    method = method_defaults(name)
    if gan_weight is not None:
      method.gan_weight = gan_weight
    whole = ml_collections.ConfigDict({'method': method, 'data': config})
    whole.method.name = name
    if refused:
      with pytest.raises(errors.ConfigError, match=f"method '{name}' trains on data images .* holds prompts only: "
                         'use a data-free method'):
        require_data_images(whole, data)
    else:
      require_data_images(whole, data)
  with pytest.raises(errors.ConfigError, match='holds prompts only: it has no reference latents'):
    data.reference_samples(2, 'test', 0)
  del run


@pytest.mark.parametrize('make, message', [
    (lambda root: (root / 'x.txt').write_text('a caption'), r'1 caption files under .* have no image of the same name '
                                                            r'\(first: .*x\.txt\); remove them or add their images'),
    (lambda root: os.remove(root / 'a.txt'), r'1 images under .* have no caption .*\(first: a\.png\)'),
    (lambda root: (root / 'a.txt').write_text('\n  \n'), r'1 images under .* have no caption'),
])
def test_a_caption_folder_with_holes_is_refused(sets, tmp_path, make, message):
  import shutil
  root = tmp_path / 'folder'
  shutil.copytree(sets[0] / 'folder', root)
  make(root)
  with pytest.raises(errors.ConfigError, match=message):
    caption_sets.CaptionFolder(str(root))


def test_bad_jsonl_and_coco_are_refused(sets, tmp_path):
  root = sets[0]
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('{"image": "missing.png", "caption": "x"}\n')
  with pytest.raises(errors.ConfigError, match=r'1 images named in .* are missing \(first: .*missing\.png\)'):
    caption_sets.CaptionJsonl(str(bad))
  bad.write_text('{"image": "a.png"}\n')
  with pytest.raises(errors.ConfigError, match=r'line 1: expected \{"image": path, "caption": str\}'):
    caption_sets.CaptionJsonl(str(bad))
  coco = json.loads((root / 'captions_train2014.json').read_text())
  coco['annotations'].append({'id': 1, 'image_id': 99, 'caption': 'x'})
  (tmp_path / 'coco.json').write_text(json.dumps(coco))
  with pytest.raises(errors.ConfigError, match='1 annotations of .* name unknown image ids'):
    caption_sets.CocoCaptions(str(tmp_path / 'coco.json'), str(root / 'folder'))


def test_the_command_refuses_mixed_sources_in_one_line(sets, tmp_path):
  root, _, _, sd15, _ = sets
  result = run_main([f'--out={tmp_path / "out"}', f'--jsonl={root / "folder" / "set.jsonl"}',
                     f'--captions_folder={root / "folder"}', f'--text_encoders={sd15}',
                     f'--vae={root / "vae.safetensors"}'], module='fewstep_jax.tools.encode_latents', check=False)
  assert error_line(result) == ('error: give exactly one of --folder, --tfds_name, --captions_folder, --jsonl, '
                                '--coco_captions, --prompts (got --captions_folder, --jsonl)')
  result = run_main([f'--out={tmp_path / "out"}', f'--captions_folder={root / "folder"}',
                     f'--vae={root / "vae.safetensors"}'], module='fewstep_jax.tools.encode_latents', check=False)
  assert error_line(result) == 'error: --captions_folder needs --text_encoders=<a diffusers pipeline folder>'
  assert not (tmp_path / 'out').exists()


def test_token_ids_are_encoded_in_the_step_on_the_fly(sets, tmp_path):
  """--text_storage=ids stores token ids alone; data.text_encoding='on_the_fly' runs the encoders in on_device with
  their parameters as arguments (data.device_params()), giving what text.encode gives."""
  root, vae, params, _, sdxl = sets
  encoding = TextEncoding.load(sdxl, storage='ids')
  out = tmp_path / 'ids'
  lines = []
  encode_dataset(caption_sets.CaptionFolder(str(root / 'folder')), vae, params, str(out), image_size=8,
                 shard_size=4, batch_size=4, text=encoding, log=lines.append)
  assert f'({8 + 2 * 64 * 4 + 24 + 3 * 2 * 77 * 4} bytes a record)' in lines[0]  # Ids of 2 encoders, 3 captions.
  records = _records(out)
  assert 'tokens' not in records and records['ids'].shape == (3, 3, 2, 77)
  with pytest.raises(errors.ConfigError, match=r"data.text_encoding='stored', but .* holds ids: set "
                     r'--config.data.text_encoding=on_the_fly, or encode it again with encode_latents '
                     r'--text_storage=states'):
    build_data(_config(out), global_batch_size=3, seed=0)
  data = build_data(_config(out, text_encoding='on_the_fly'), global_batch_size=3, seed=0)
  batch = data.next_batch()
  assert set(batch['y']) == {'ids', 'time_ids'}
  step = jax.jit(lambda device_params, b, key: data.on_device(key, b, device_params))
  condition = step(data.device_params(), batch, jax.random.key(0))['y']
  assert set(condition) == {'tokens', 'pooled', 'time_ids'}
  captions = [caption for item in CAPTIONS for caption in item]
  states, pooled = text.encode(encoding.encoders, captions)
  ids = np.stack(text.tokenize(encoding.encoders, captions), axis=1)
  for row in range(3):
    k = int(np.flatnonzero((ids == batch['y']['ids'][row]).all(axis=(1, 2)))[0])
    np.testing.assert_allclose(condition['tokens'][row], states[k], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(condition['pooled'][row], pooled[k], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(condition['time_ids'], batch['y']['time_ids'])


def test_a_later_record_format_is_refused_in_one_line(tmp_path):
  (tmp_path / 'info.json').write_text(json.dumps({'format': 'captioned', 'version': 3, 'num_shards': 1}))
  with pytest.raises(errors.ConfigError, match=r"holds latents in format 'captioned' version 3, which this "
                     'fewstep_jax does not read .*: update fewstep_jax, or encode the directory again'):
    build_data(_config(tmp_path), global_batch_size=2, seed=0)


@pytest.mark.slow  # About 7 minutes on 2 shared cores, most of it compiling the U-Net step.
def test_a_run_trains_on_captioned_latents_with_the_encoders_in_its_step(sets, tmp_path):
  """Two flow-matching steps of the tiny SD 1.5 U-Net on token ids encoded in the step: the trainer passes the text
  encoders' parameters to its jitted step as an argument."""
  from fewstep_jax import trainer
  from fewstep_jax.config_base import base_config
  root, vae, params, sd15, _ = sets
  out = tmp_path / 'ids'
  encode_dataset(caption_sets.CaptionFolder(str(root / 'folder')), vae, params, str(out), image_size=32,
                 shard_size=4, batch_size=4, text=TextEncoding.load(sd15, storage='ids'), log=lambda line: None)
  config = base_config(method='flow_matching', network='sd_unet', dataset='latents')
  config.network.preset = 'sd15_tiny'
  config.data.update(latents_dir=str(out), text_encoding='on_the_fly')
  config.train.update(num_steps=2, batch_size=2, log_every=1)
  run, state, finished = trainer.train(config, None)
  assert finished and int(state.step) == 2 and run.data_params is not None
  assert jax.tree.structure(run.data_params) == jax.tree.structure(run.data.device_params())

"""The latent encoder: a folder of images encoded by a (tiny, random) SD-VAE into array_record shards of posterior
moments, read back by the 'latents' data source, resumed after a lost shard, and sampled on the device."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import torch_format
from conftest import error_line, run_main
from fewstep_jax.data import build_data, data_defaults
from fewstep_jax.tools.encode_latents import FolderImages, center_crop, encode_dataset
from fewstep_jax.nn import sd_vae

SMALL_VAE = dict(block_out_channels=(8, 16), layers_per_block=1)  # 32 groups: one channel each here.


@pytest.fixture(scope='module')
def images_and_vae(tmp_path_factory):
  root = tmp_path_factory.mktemp('encode')
  rng = np.random.default_rng(0)
  for label, name in enumerate(('cat', 'dog')):
    os.makedirs(root / 'images' / name)
    for i in range(4):
      size = (12 + i, 10 + 2 * label)  # Not square, not the crop size: the crop and resize run.
      Image.fromarray(rng.integers(0, 256, size[::-1] + (3,), dtype=np.uint8)).save(
          root / 'images' / name / f'{i}.png')
  vae = sd_vae.SDVAE(**SMALL_VAE)
  abstract = sd_vae.abstract_params(vae, image_size=8)
  weights_rng = np.random.default_rng(1)  # numpy: jax.random per leaf would compile a kernel per shape.
  params = jax.tree.map(lambda leaf: (0.2 * weights_rng.standard_normal(leaf.shape)).astype(np.float32), abstract)
  from safetensors.numpy import save_file
  save_file(sd_vae.to_state_dict(params), str(root / 'vae.safetensors'))
  return root, vae, params


def test_center_crop_is_adms():
  image = Image.fromarray(np.arange(40 * 30 * 3, dtype=np.uint8).reshape(30, 40, 3))
  crop = center_crop(image, 8)  # 40x30 -> halved twice by BOX (10x7 is under 16) ... then bicubic to the short side.
  assert crop.shape == (8, 8, 3)
  halved = image.resize((20, 15), Image.BOX)
  expected = np.asarray(halved.resize((round(20 * 8 / 15), 8), Image.BICUBIC))
  left = (expected.shape[1] - 8) // 2
  np.testing.assert_array_equal(crop, expected[:, left:left + 8])


def test_encoded_moments_read_back_resume_and_are_sampled_on_device(images_and_vae, tmp_path):
  root, vae, params = images_and_vae
  out = str(tmp_path / 'latents')
  result = run_main([f'--vae={root / "vae.safetensors"}', f'--out={out}', f'--folder={root / "images"}',
                     '--image_size=8', '--shard_size=3', '--batch_size=2'],
                    module='fewstep_jax.tools.encode_latents')
  assert 'in 3 shards; 0 of' in result.stdout
  shards = sorted(name for name in os.listdir(out) if name.endswith('.array_record'))
  assert len(shards) == 3

  # Losing a shard re-encodes that shard only, to the same bytes.
  kept = os.path.join(out, shards[0])
  kept_time = os.path.getmtime(kept)
  lost = os.path.join(out, shards[1])
  lost_bytes = open(lost, 'rb').read()
  os.remove(lost)
  lines = []
  encode_dataset(FolderImages(str(root / 'images')), vae, params, out, image_size=8, shard_size=3, batch_size=2,
                 source=str(root / 'images'), log=lines.append)
  assert '2 of this process\'s 3 already written' in lines[0]
  assert os.path.getmtime(kept) == kept_time and open(lost, 'rb').read() == lost_bytes
  with pytest.raises(ValueError, match='other arguments .*image_size'):
    encode_dataset(FolderImages(str(root / 'images')), vae, params, out, image_size=16, shard_size=3, batch_size=2,
                   source=str(root / 'images'), log=lines.append)

  config = data_defaults()
  config.update(name='latents', latents_dir=out)
  data = build_data(config, global_batch_size=8, seed=0)
  assert data.data_shape == (4, 4, 4) and data.num_classes == 2
  batch = data.next_batch()
  assert set(batch) == {'x', 'x_std', 'y'}
  # The means are the encoder's, scaled, for the image each label names.
  folder = FolderImages(str(root / 'images'))
  crops = np.stack([center_crop(folder.image(i)[0], 8) for i in range(len(folder))])
  mean, std = jax.jit(lambda p, x: vae.apply({'params': p}, x, method=vae.encode))(
      params, jnp.asarray(crops, jnp.float32) / 127.5 - 1)
  scaled = np.asarray(mean) * 0.18215
  rows = [int(np.argmin(np.abs(scaled - x).sum((1, 2, 3)))) for x in batch['x']]
  np.testing.assert_allclose(batch['x'], scaled[rows], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(batch['x_std'], np.asarray(std)[rows] * 0.18215, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(batch['y'], [folder.items[r][1] for r in rows])

  key = jax.random.key(3)
  sampled = data.on_device(key, {k: jnp.asarray(v) for k, v in batch.items()})
  assert set(sampled) == {'x', 'y'}
  eps = jax.random.normal(key, batch['x'].shape)
  np.testing.assert_allclose(sampled['x'], batch['x'] + batch['x_std'] * np.asarray(eps), rtol=1e-6, atol=1e-7)

  os.remove(lost)
  with pytest.raises(FileNotFoundError, match='1 of 3 shards are missing'):
    build_data(config, global_batch_size=8, seed=0)


def test_latent_samples_are_decoded_by_the_configured_vae(images_and_vae):
  import types
  from fewstep_jax.eval import evaluate
  from fewstep_jax.train import sharding
  root, vae, params = images_and_vae
  config = types.SimpleNamespace(data=data_defaults())
  config.data.update(name='latents', vae=str(root / 'vae.safetensors'))
  mesh = sharding.make_mesh(types.SimpleNamespace(data=jax.device_count(), fsdp=1))
  run = types.SimpleNamespace(config=config, mesh=mesh)
  decode = evaluate.latent_decoder(run)
  assert evaluate.latent_decoder(run) is decode  # Built once per run.
  latents = jax.random.normal(jax.random.key(0), (2, 4, 4, 4)) * 0.18215
  want = np.clip(jax.jit(lambda p, z: vae.apply({'params': p}, z, method=vae.decode))(params, latents / 0.18215), -1, 1)
  np.testing.assert_allclose(decode(latents), want, rtol=1e-5, atol=1e-6)
  config.data.vae = ''
  assert evaluate.latent_decoder(types.SimpleNamespace(config=config, mesh=mesh)) is None


def test_edm2s_latents_are_encoded_from_unit_pixels_normalised_per_channel_and_decoded_back(images_and_vae, tmp_path):
  """--pixels=unit feeds the VAE x / 255 as EDM2's StabilityVAEEncoder.encode_pixels does; data.latent_norm='edm2'
  reads (raw - raw_mean) * 0.5 / raw_std per channel (its encode_latents); the decoder undoes both. Latents of the
  other pixel range are refused, naming the fix."""
  import types
  from fewstep_jax.data import latents as latents_lib
  from fewstep_jax.eval import evaluate
  from fewstep_jax.train import sharding
  root, vae, params = images_and_vae
  out = str(tmp_path / 'latents')
  folder = FolderImages(str(root / 'images'))
  encode_dataset(folder, vae, params, out, image_size=8, shard_size=8, batch_size=8, pixels='unit',
                 log=lambda line: None)
  config = data_defaults()
  config.update(name='latents', latents_dir=out, latent_norm='edm2', vae=str(root / 'vae.safetensors'))
  data = build_data(config, global_batch_size=8, seed=0)
  batch = data.next_batch()
  crops = np.stack([center_crop(folder.image(i)[0], 8) for i in range(len(folder))])
  mean, std = jax.jit(lambda p, x: vae.apply({'params': p}, x, method=vae.encode))(
      params, jnp.asarray(crops, jnp.float32) / 255)
  raw_mean = np.array([5.81, 3.25, 0.12, -2.15])
  raw_std = np.array([4.17, 4.62, 3.71, 3.28])
  final = (np.asarray(mean) - raw_mean) * (0.5 / raw_std)
  rows = [int(np.argmin(np.abs(final - x).sum((1, 2, 3)))) for x in batch['x']]
  np.testing.assert_allclose(batch['x'], final[rows], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(batch['x_std'], np.asarray(std)[rows] * (0.5 / raw_std), rtol=1e-5, atol=1e-6)

  mesh = sharding.make_mesh(types.SimpleNamespace(data=jax.device_count(), fsdp=1))
  decode = evaluate.latent_decoder(types.SimpleNamespace(config=types.SimpleNamespace(data=config), mesh=mesh))
  raw = jax.jit(lambda p, z: vae.apply({'params': p}, z, method=vae.decode))(params, jnp.asarray(mean[:2]))
  np.testing.assert_allclose(decode(jnp.asarray(final[:2], jnp.float32)), np.clip(2 * np.asarray(raw) - 1, -1, 1),
                             rtol=1e-4, atol=1e-5)

  config.latent_norm = 'scale'
  with pytest.raises(ValueError, match=r'images in \[0, 1\].*latent_norm=edm2'):
    build_data(config, global_batch_size=8, seed=0)
  assert latents_lib.latent_norm(config).pixels == 'signed'


def test_a_refused_vae_file_ends_the_command_in_one_line_and_writes_nothing(images_and_vae, tmp_path):
  root, _, _ = images_and_vae
  marker, vae, out = tmp_path / 'ran', str(tmp_path / 'diffusion_pytorch_model.bin'), tmp_path / 'latents'
  torch_format.save_code_running_pickle(vae, str(marker))
  result = run_main([f'--vae={vae}', f'--out={out}', f'--folder={root / "images"}', '--image_size=8'],
                    module='fewstep_jax.tools.encode_latents', check=False)
  assert error_line(result).startswith(f'error: refused {vae}: loading it would call ')
  assert not out.exists() and not marker.exists()

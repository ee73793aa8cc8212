"""Statistics and Frechet distances of image files (eval/sources.py, the stats command's --images / --samples, and
`python -m fewstep_jax.eval.fid`): image files are read as pytorch-fid reads them (8-bit values, RGB, any size); a
folder of the evaluator's samples written as PNG, and the same samples as .npz / .npy arrays, give the statistics the
evaluator computes; a distance to a source's own saved statistics is 0 and distances of sources equal those of their
statistics files; user errors are one line.

The networks have random weights, as in test_eval_fid.py: the Inception at a 75-pixel input (its smallest), and, where
distances are computed (their 2048 x 2048 eigendecompositions take seconds), a small ViT with DINOv2's position grid,
which also checks --features=dinov2."""
import os
import types

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from conftest import run_main
from fewstep_jax.eval import dinov2, evaluate, fid, inception, sources, stats

RESOLUTION = 75


def _quantised(samples):
  """The 8-bit pixels the evaluator reads a [-1, 1] sample as (eval/inception.py), as EDM writes its PNGs."""
  return np.clip(np.floor(samples * 127.5 + 128), 0, 255).astype(np.uint8)


def _write_pngs(directory, pixels):
  os.makedirs(directory)
  for index, image in enumerate(pixels):
    Image.fromarray(image).save(os.path.join(directory, f'{index:03d}.png'))
  return str(directory)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  """Random Inception and small DINOv2 weights; evaluator samples (floats beyond [-1, 1] too) written as a folder of
  PNGs, an .npz of uint8 pixels, an .npy of the floats and an .npz of channels-first pixels; another folder of
  different images."""
  root = tmp_path_factory.mktemp('fid_files')
  weights, vit_weights = str(root / 'inception.npz'), str(root / 'dinov2.npz')
  inception.save_weights(weights, inception.random_weights(0))
  dinov2.save_state_dict(vit_weights, dinov2.random_weights(dinov2.ViT(dim=64, depth=2, heads=1), 0))
  rng = np.random.default_rng(0)
  samples = rng.uniform(-1.2, 1.2, (5, 8, 8, 3)).astype(np.float32)
  pixels = _quantised(samples)
  np.savez(root / 'pixels.npz', pixels, np.arange(5))  # ADM's layout: arr_0 images, arr_1 labels.
  np.save(root / 'floats.npy', samples)
  np.savez_compressed(root / 'channels_first.npz', images=pixels.transpose(0, 3, 1, 2))
  other = rng.integers(0, 160, (5, 8, 8, 3), dtype=np.uint8)
  return types.SimpleNamespace(root=root, weights=weights, samples=samples, folder=_write_pngs(root / 'a', pixels),
                               other=_write_pngs(root / 'b', other), vit=vit_weights)


def _vit(setup):
  """fid's network options: the small DINOv2 at its own 224 pixels."""
  return {'features': 'dinov2', 'weights': setup.vit, 'batch_size': 8}


def _evaluator_statistics(setup):
  """The mean and covariance the evaluator's InceptionMetrics accumulates for the samples."""
  mesh = jax.make_mesh((1, 1), ('data', 'fsdp'), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  reference = str(setup.root / 'unused_reference.npz')
  stats.save_stats(reference, np.zeros(inception.FEATURE_DIM), np.eye(inception.FEATURE_DIM))
  config = ml_collections.ConfigDict({'eval': {'inception': setup.weights, 'reference_stats': reference,
                                               'inception_resolution': RESOLUTION}})
  evaluator = evaluate.InceptionMetrics(types.SimpleNamespace(config=config, mesh=mesh), 5, 0)
  evaluator.start()
  evaluator.add(setup.samples, None, len(setup.samples))
  return evaluator.stats.mu_sigma()


def _file_statistics(path, setup):
  network = stats.feature_network('inception', setup.weights, RESOLUTION)
  mu, sigma, count = stats.feature_statistics(sources.open_images(path).batches, network, batch_size=8)
  assert count == 5
  return mu, sigma


def test_files_of_the_evaluators_samples_give_the_evaluators_statistics(setup):
  expected_mu, expected_sigma = _evaluator_statistics(setup)
  for path in (setup.folder, setup.root / 'pixels.npz', setup.root / 'floats.npy', setup.root / 'channels_first.npz'):
    mu, sigma = _file_statistics(str(path), setup)
    np.testing.assert_allclose(mu, expected_mu, rtol=1e-6, atol=1e-9, err_msg=str(path))
    np.testing.assert_allclose(sigma, expected_sigma, rtol=1e-6, atol=1e-9 * np.abs(expected_sigma).max(),
                               err_msg=str(path))
  description = sources.open_images(str(setup.root / 'pixels.npz')).description
  assert description.endswith('pixels.npz[arr_0] (uint8 pixels 0..255, NHWC, 8x8)')
  assert '(float32 read as [-1, 1], NHWC, 8x8)' in sources.open_images(str(setup.root / 'floats.npy')).description


def test_a_folder_is_read_as_pytorch_fid_reads_files_sorted_and_batched_by_size(tmp_path):
  rng = np.random.default_rng(1)
  rgb, gray = rng.integers(0, 256, (8, 8, 3), np.uint8), rng.integers(0, 256, (8, 8), np.uint8)
  rgba, wide = rng.integers(0, 256, (8, 8, 4), np.uint8), rng.integers(0, 256, (12, 10, 3), np.uint8)
  os.makedirs(tmp_path / 'sub')
  Image.fromarray(rgb).save(tmp_path / 'b.png')
  Image.fromarray(gray).save(tmp_path / 'a.PNG')
  Image.fromarray(rgba).save(tmp_path / 'sub' / 'c.png')
  Image.fromarray(wide).save(tmp_path / 'sub' / 'd.jpg', quality=90)
  Image.fromarray(wide).save(tmp_path / 'c.JPEG', quality=70)
  (tmp_path / 'notes.txt').write_text('not an image')
  with Image.open(tmp_path / 'c.JPEG') as c, Image.open(tmp_path / 'sub' / 'd.jpg') as d:
    decoded = [np.asarray(c.convert('RGB')), np.asarray(d.convert('RGB'))]
  # Sorted paths a.PNG, b.png, c.JPEG, sub/c.png, sub/d.jpg, batched by size in the order sizes first appear.
  expected = [np.stack([np.repeat(gray[..., None], 3, -1), rgb, rgba[..., :3]]), np.stack(decoded)]
  images = sources.open_images(str(tmp_path))
  assert images.count == 5 and images.description == f'5 images of {tmp_path} (2 sizes: 8x8, 10x12)'
  batches = list(images.batches(8))
  assert [batch.shape for batch in batches] == [(3, 8, 8, 3), (2, 12, 10, 3)]
  for batch, pixels in zip(batches, expected):  # The evaluator's quantisation gives back the files' 8-bit values.
    np.testing.assert_array_equal(np.clip(np.floor(batch * 127.5 + 128), 0, 255), pixels)
  # So the network's input is pytorch-fid's: the value / 255 (ToTensor), resized (here to the same size), 2x - 1.
  network_input = inception.preprocess(batches[0], resolution=8)
  np.testing.assert_allclose(network_input, expected[0] / 255.0 * 2 - 1, rtol=0, atol=1e-6)
  assert [len(batch) for batch in images.batches(2)] == [2, 1, 2]


def test_fid_to_own_statistics_is_zero_and_statistics_files_give_the_same_fid(setup, tmp_path):
  network = _vit(setup)
  own = str(tmp_path / 'a.npz')
  assert fid.save_statistics(setup.folder, own, **network).startswith('5 images of')
  mu, sigma = stats.load_stats(own)
  assert mu.shape == (64,)
  assert fid.distance(setup.folder, own, **network) < 1e-9 * np.trace(sigma)
  other = str(tmp_path / 'b.npz')
  fid.save_statistics(setup.other, other, **network)
  between = fid.distance(setup.folder, setup.other, **network)
  assert between > 1e-3 * np.trace(sigma)
  assert fid.distance(own, other) == pytest.approx(between, rel=1e-9)  # No weights needed for statistics.
  assert fid.distance(str(setup.root / 'pixels.npz'), other, **network) == pytest.approx(between, rel=1e-9)
  with pytest.raises(ValueError, match='exists; --save_stats does not replace a file'):
    fid.save_statistics(setup.folder, own, **network)
  np.testing.assert_array_equal(stats.load_stats(own)[0], mu)  # Untouched.


def test_the_commands_print_one_line_and_write_what_the_functions_compute(setup, tmp_path):
  printed = run_main([setup.folder, setup.other, '--features=dinov2', f'--weights={setup.vit}', '--batch=8'],
                     module='fewstep_jax.eval.fid').stdout
  assert printed.startswith('FD_DINOv2:  ') and len(printed.strip().splitlines()) == 1
  assert float(printed.split()[1]) == pytest.approx(fid.distance(setup.folder, setup.other, **_vit(setup)), rel=1e-9)
  out = str(tmp_path / 'a.npz')
  printed = run_main([f'--images={setup.folder}', f'--out={out}', f'--weights={setup.weights}',
                      f'--resolution={RESOLUTION}', '--batch=8'], module='fewstep_jax.eval.stats').stdout
  assert f'inception statistics of 5 images of {setup.folder} (1 size: 8x8) written to {out}' in printed
  for saved, computed in zip(stats.load_stats(out), _file_statistics(setup.folder, setup)):
    np.testing.assert_allclose(saved, computed, rtol=1e-6, atol=1e-9 * np.abs(computed).max())


def _error(args, module='fewstep_jax.eval.fid'):
  result = run_main(args, module=module, check=False)
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 1 and len(lines) == 1 and 'Traceback' not in result.stderr, result.stderr
  return lines[0]


def test_user_errors_are_one_line(setup, tmp_path, capsys):
  network = _vit(setup)
  assert _error([str(tmp_path / 'absent'), setup.folder]).startswith(f'error: {tmp_path / "absent"}: no such folder')
  assert 'holds no image files' in _error([f'--images={tmp_path}', '--weights=w.npz', '--out=o.npz'],
                                          module='fewstep_jax.eval.stats')
  (tmp_path / 'notes.txt').write_text('not an image')
  with pytest.raises(ValueError, match='holds no image files'):
    fid.distance(str(tmp_path), setup.folder, **network)
  broken = tmp_path / 'broken'
  os.makedirs(broken)
  (broken / 'x.png').write_bytes(b'not a png')
  (broken / 'y.png').write_bytes(b'not a png either')
  with pytest.raises(ValueError, match=r'x.png is not a readable image \(cannot identify'):
    fid.distance(str(broken), setup.folder, **network)
  np.savez(tmp_path / 'keys.npz', images=np.zeros((4, 8, 8, 3), np.uint8), labels=np.zeros(4))
  with pytest.raises(ValueError, match=r"holds arrays \['images', 'labels'\]: expected the images as arr_0"):
    fid.distance(str(tmp_path / 'keys.npz'), setup.folder, **network)
  np.save(tmp_path / 'bytes.npy', np.zeros((4, 8, 8, 3), np.float32) + 255)
  with pytest.raises(ValueError, match='float samples from 255 to 255; .* store 0..255 pixels as uint8'):
    fid.distance(str(tmp_path / 'bytes.npy'), setup.folder, **network)
  np.save(tmp_path / 'unit.npy', np.full((2, 8, 8, 3), 0.5, np.float32))
  assert sources.open_images(str(tmp_path / 'unit.npy')).count == 2  # Read as [-1, 1], with a warning.
  assert 'hold no negative value; floats are read as [-1, 1]' in capsys.readouterr().err
  np.save(tmp_path / 'one.npy', np.zeros((1, 8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match='holds 1 image; a covariance needs at least 2'):
    fid.distance(str(tmp_path / 'one.npy'), setup.folder, **network)
  with pytest.raises(ValueError, match='--weights=FILE is needed'):
    fid.distance(setup.folder, setup.other, **dict(network, weights=None))
  with pytest.raises(FileNotFoundError, match='no such file; nothing is downloaded'):
    fid.distance(setup.folder, setup.other, **dict(network, weights=str(tmp_path / 'absent.pth')))
  small = str(tmp_path / 'small.npz')
  stats.save_stats(small, np.zeros(64), np.eye(64))
  stats.save_stats(str(tmp_path / 'full.npz'), np.zeros(2048), np.eye(2048))
  with pytest.raises(ValueError, match='64-dimensional features, .* 2048-dimensional ones: compare statistics of '
                     'the same network'):
    fid.distance(small, str(tmp_path / 'full.npz'))
  with pytest.raises(ValueError, match='holds statistics already'):
    fid.save_statistics(small, str(tmp_path / 'new.npz'), **network)
  with pytest.raises(ValueError, match='name it FILE.npz'):
    fid.save_statistics(setup.folder, str(tmp_path / 'new.stats'), **network)

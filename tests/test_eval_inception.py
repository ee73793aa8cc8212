"""The FID Inception-v3: its outputs equal pytorch-fid's on the same random weights and 8-bit images (outputs
recorded by experiments/parity/inception.py from pytorch-fid's own network), its resize is PyTorch's bilinear, and
its weight files are read, converted and refused the way the importer promises."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import torch_format
from conftest import error_line, run_main
from fewstep_jax.eval import inception

GOLDEN = os.path.join(os.path.dirname(__file__), 'data', 'inception_golden.npz')


def test_features_and_logits_equal_pytorch_fids_on_the_same_weights_and_images():
  golden = np.load(GOLDEN)
  weights = inception.random_weights(int(golden['weights_seed']))
  images = (golden['pixels'].astype(np.float32) - 127.5) / 127.5  # Quantises back to exactly these pixels.
  features, logits = jax.jit(inception.features_and_logits)(weights, images)
  for ours, theirs in ((features, golden['features']), (logits, golden['logits'])):
    assert np.abs(np.asarray(ours) - theirs).max() / np.abs(theirs).max() < 1e-4


@pytest.mark.parametrize('size_in,size_out', [(8, 29), (32, 299), (400, 299), (5, 5)])
def test_the_resize_is_pytorchs_bilinear_without_antialiasing(size_in, size_out):
  # Independent formula: XLA's bilinear resize samples at the same half-pixel centres; without antialiasing it is
  # F.interpolate(mode='bilinear', align_corners=False) also when shrinking. XLA computes its weights in float32
  # (differences up to 6e-5 here); a wrong sampling grid would differ by tenths.
  x = np.random.default_rng(0).normal(size=(size_in, 3)).astype(np.float32)
  expected = jax.image.resize(x, (size_out, 3), 'bilinear', antialias=False)
  np.testing.assert_allclose(inception._bilinear_matrix(size_in, size_out) @ x, expected, rtol=0, atol=1e-4)


def test_preprocessing_quantises_to_8_bits_and_repeats_gray_to_rgb():
  gray = np.array([-1.0, -0.999, 0.0, 0.5, 1.0, 1.7], np.float32).reshape(1, 1, 6, 1)
  pixels = inception.preprocess(gray, resolution=6)  # Rows 1 -> 6 copies, columns 6 -> 6 unchanged.
  expected = np.floor(np.clip(gray[0, 0, :, 0] * 127.5 + 128, 0, 255)) / 255 * 2 - 1
  np.testing.assert_allclose(pixels[0, 3, :, 1], expected, atol=1e-6)
  assert pixels.shape == (1, 6, 6, 3) and np.all(pixels[..., 0] == pixels[..., 2])


def test_the_network_holds_pytorch_fids_arrays():
  shapes = inception.weight_shapes()
  # pytorch-fid's network: 23,850,960 parameters plus 34,432 batch-norm running means and variances.
  assert sum(int(np.prod(shape)) for shape in shapes.values()) == 23_850_960 + 34_432
  assert shapes['Mixed_7c.branch_pool.conv.weight'] == (1, 1, 2048, 192)


def test_weight_files_round_trip_and_wrong_ones_name_the_array(tmp_path):
  from safetensors.numpy import save_file
  weights = inception.random_weights(3)
  state_dict = inception.to_state_dict(weights)
  assert state_dict['Conv2d_1a_3x3.conv.weight'].shape == (32, 3, 3, 3)  # PyTorch's [out, in, h, w].
  state_dict['Conv2d_1a_3x3.bn.num_batches_tracked'] = np.zeros((), np.int64)  # Dropped on import.
  safetensors_path = str(tmp_path / 'inception.safetensors')
  save_file(state_dict, safetensors_path)
  npz_path = str(tmp_path / 'converted' / 'inception.npz')
  subprocess.run([sys.executable, '-m', 'fewstep_jax.eval.inception', f'--src={safetensors_path}',
                  f'--out={npz_path}'], check=True, capture_output=True)
  for path in (safetensors_path, npz_path):
    loaded = inception.load_weights(path)
    assert sorted(loaded) == sorted(weights)
    assert all(np.array_equal(loaded[name], weights[name]) for name in weights)

  broken = dict(state_dict)
  broken.pop('Mixed_6c.branch7x7_2.conv.weight')
  broken['Mixed_6c.extra.weight'] = np.zeros(3, np.float32)
  with pytest.raises(ValueError, match=r"missing \['Mixed_6c.branch7x7_2.conv.weight'\], unexpected "
                     r"\['Mixed_6c.extra.weight'\]"):
    inception.from_state_dict(broken)
  wrong = dict(state_dict, **{'fc.bias': np.zeros(1000, np.float32)})
  with pytest.raises(ValueError, match=r'fc.bias has shape \(1000,\).*expected \(1008,\)'):
    inception.from_state_dict(wrong)
  with pytest.raises(FileNotFoundError, match='pt_inception-2015-12-05-6726825d.pth'):
    inception.load_weights(str(tmp_path / 'absent.pth'))
  with pytest.raises(ValueError, match='set --config.eval.inception'):
    inception.load_weights('')


def test_a_damaged_file_ends_the_conversion_in_one_line_and_writes_nothing(tmp_path):
  src, out = str(tmp_path / 'pt_inception.pth'), tmp_path / 'inception.npz'
  torch_format.save_zip({'fc.bias': np.zeros(1008, np.float32)}, src)
  torch_format.cut_short(src)  # An interrupted download: the zip's directory, written last, is missing.
  result = run_main([f'--src={src}', f'--out={out}'], module='fewstep_jax.eval.inception', check=False)
  assert error_line(result) == (f"error: {src} is a zip archive (torch.save's layout) that is cut short or damaged: "
                                'download it again')
  assert not out.exists()


def test_a_refused_file_ends_the_stats_command_in_one_line(tmp_path):  # The command reads this network's weights.
  marker, weights, out = tmp_path / 'ran', str(tmp_path / 'inception.pth'), tmp_path / 'stats.npz'
  torch_format.save_code_running_pickle(weights, str(marker))
  result = run_main(['--config=configs/digits/cd.py', f'--config.data.dir={tmp_path / "data"}', f'--weights={weights}',
                     f'--out={out}', '--num=8', '--batch=8'], module='fewstep_jax.eval.stats', check=False)
  assert error_line(result).startswith(f'error: refused {weights}: loading it would call ')
  assert not out.exists() and not marker.exists()


def test_a_pytorch_checkpoint_is_read_as_weights_only(tmp_path):
  torch = pytest.importorskip('torch')
  state_dict = {k: torch.from_numpy(v) for k, v in inception.to_state_dict(inception.random_weights(4)).items()}
  torch.save(state_dict, tmp_path / 'inception.pth')
  loaded = inception.load_weights(str(tmp_path / 'inception.pth'))
  assert np.array_equal(loaded['fc.weight'], inception.random_weights(4)['fc.weight'])

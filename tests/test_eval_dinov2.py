"""FD-DINOv2's features: a small ViT with DINOv2's 37 x 37 position grid gives the outputs recorded from DINOv2's
own network under EDM2's preprocessing (experiments/parity/dinov2.py wrote them; the full ViT-L/14 is compared
there), the antialiased bicubic resize is PIL's, and weight files are read, converted and refused as promised."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import error_line, run_main
from fewstep_jax.eval import dinov2

GOLDEN = os.path.join(os.path.dirname(__file__), 'data', 'dinov2_golden.npz')


def test_features_equal_dinov2s_own_network_under_edm2s_preprocessing(tmp_path):
  golden = np.load(GOLDEN)
  vit = dinov2.ViT(dim=int(golden['dim']), depth=int(golden['depth']), heads=int(golden['heads']))
  state_dict = dinov2.random_weights(vit, int(golden['weights_seed']))
  state_dict['mask_token'] = np.zeros((1, vit.dim), np.float32)  # In every published file; unused.
  loaded_vit, weights = dinov2.from_state_dict(state_dict)
  assert loaded_vit == vit
  images = (golden['pixels'].astype(np.float32) - 127.5) / 127.5  # Quantises back to exactly these pixels.
  features = jax.jit(lambda w, x: dinov2.features(vit, w, x))(weights, images)
  assert np.abs(np.asarray(features) - golden['features']).max() / np.abs(golden['features']).max() < 1e-4


@pytest.mark.parametrize('size_in', [8, 64, 256])
def test_the_antialiased_bicubic_resize_is_pils(size_in):
  # Independent implementation: PIL's float-image bicubic resize, whose filter (a = -0.5, widened when shrinking)
  # is what F.interpolate(mode='bicubic', antialias=True) reproduces.
  x = np.random.default_rng(0).uniform(0, 255, (size_in, size_in)).astype(np.float32)
  expected = np.asarray(Image.fromarray(x, mode='F').resize((224, 224), Image.Resampling.BICUBIC))
  matrix = dinov2._antialiased_bicubic_matrix(size_in, 224)
  np.testing.assert_allclose(matrix @ x @ matrix.T, expected, rtol=0, atol=2e-3)


def test_vit_l14_shapes_and_parameter_count():
  shapes = dinov2.weight_shapes()
  count = sum(int(np.prod(shape)) for shape in shapes.values())
  # DINOv2's own vit_large as hub's dinov2_vitl14 builds it: 304,368,640 parameters, 1,024 of them the mask token.
  assert count == 304_368_640 - 1024
  assert dinov2.infer_vit({name: np.zeros(shape, np.float32) for name, shape in shapes.items()}) == dinov2.VIT_L14
  assert dinov2.position_embedding(np.zeros(shapes['pos_embed']), dinov2.VIT_L14).shape == (1, 257, 1024)


def test_weight_files_round_trip_and_wrong_ones_name_the_array(tmp_path):
  from safetensors.numpy import save_file
  vit = dinov2.ViT(dim=64, depth=2, heads=1)
  state_dict = dinov2.random_weights(vit, 1)
  source = str(tmp_path / 'dinov2.safetensors')
  save_file(dict(state_dict, mask_token=np.zeros((1, 64), np.float32)), source)
  converted = str(tmp_path / 'dinov2.npz')
  subprocess.run([sys.executable, '-m', 'fewstep_jax.eval.dinov2', f'--src={source}', f'--out={converted}'],
                 check=True, capture_output=True)
  for path in (source, converted):
    loaded_vit, weights = dinov2.load_weights(path)
    assert loaded_vit == vit
    np.testing.assert_array_equal(weights['blocks.1.mlp.fc1.weight'], state_dict['blocks.1.mlp.fc1.weight'].T)
  broken = dict(state_dict)
  broken.pop('blocks.1.ls2.gamma')
  with pytest.raises(ValueError, match=r"missing \['blocks.1.ls2.gamma'\]"):
    dinov2.from_state_dict(broken)
  wrong = dict(state_dict, **{'blocks.0.attn.qkv.bias': np.zeros(10, np.float32)})
  with pytest.raises(ValueError, match=r"wrong shapes \[\('blocks.0.attn.qkv.bias', \(10,\), \(192,\)\)\]"):
    dinov2.from_state_dict(wrong)
  with pytest.raises(FileNotFoundError, match='dinov2_vitl14_pretrain.pth'):
    dinov2.load_weights(str(tmp_path / 'absent.pth'))


def test_a_missing_file_ends_the_conversion_in_one_line_and_writes_nothing(tmp_path):
  src, out = str(tmp_path / 'absent.pth'), tmp_path / 'dinov2.npz'
  result = run_main([f'--src={src}', f'--out={out}'], module='fewstep_jax.eval.dinov2', check=False)
  assert error_line(result).startswith(f"error: DINOv2 weights file '{src}' not found; nothing is downloaded")
  assert 'dinov2_vitl14_pretrain.pth' in result.stderr and not out.exists()

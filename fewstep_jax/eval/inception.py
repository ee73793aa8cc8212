"""The FID Inception-v3 in JAX: pool3 features (FID) and logits (Inception Score) of images.

The network is the 2015-12-05 TensorFlow Inception graph that the TF FID code, pytorch-fid, clean-fid and the
ADM / EDM evaluators all use, in pytorch-fid's layout (`pytorch_fid/inception.py`, `fid_inception_v3` and its
`FIDInceptionA` / `C` / `E_1` / `E_2` blocks), which differs from the ImageNet Inception-v3 in three places, all
kept here: the average pools of the A, C and E blocks leave the zero padding out of the average (TF's pooling),
the last E block pools with a max instead of an average, and the classifier has 1008 outputs.

Preprocessing follows pytorch-fid on image files: a sample in [-1, 1] is first quantised to the 8-bit value an
image file would hold ((x * 127.5 + 128) clipped to [0, 255] and truncated, as EDM writes its samples), read back
as v / 255, resized bilinearly to 299 x 299 (`F.interpolate(mode='bilinear', align_corners=False)`, no
antialiasing), and scaled to [-1, 1]. A one-channel image is repeated to RGB.

Weights are read from a local file, never downloaded: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`
(read with numpy alone by `fewstep_jax.weight_files`' restricted unpickler, which runs no code from the file), the same
state dict as `.safetensors`, or the `.npz` that `python -m fewstep_jax.eval.inception --src=FILE --out=FILE.npz`
writes from either. Arrays keep the state dict's names; convolution kernels are
stored HWIO.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np

from fewstep_jax import weight_files
from fewstep_jax.train import files

PUBLISHED_AT = ('https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
                'pt_inception-2015-12-05-6726825d.pth')
FEATURE_DIM = 2048
NUM_LOGITS = 1008
RESOLUTION = 299
BN_EPS = 1e-3  # torchvision's BasicConv2d.
# Full float32 products on every backend (no TF32 / bfloat16 passes), so a metric does not depend on the chip.
_EXACT = jax.lax.Precision.HIGHEST

# (name, in, out, kernel (h, w), stride, padding (h, w)) of every conv + batch norm + ReLU unit, in order.
_STEM = (('Conv2d_1a_3x3', 3, 32, (3, 3), 2, (0, 0)),
         ('Conv2d_2a_3x3', 32, 32, (3, 3), 1, (0, 0)),
         ('Conv2d_2b_3x3', 32, 64, (3, 3), 1, (1, 1)),
         ('Conv2d_3b_1x1', 64, 80, (1, 1), 1, (0, 0)),
         ('Conv2d_4a_3x3', 80, 192, (3, 3), 1, (0, 0)))


def _block_a(c, pool):
  return (('branch1x1', c, 64, (1, 1), 1, (0, 0)),
          ('branch5x5_1', c, 48, (1, 1), 1, (0, 0)), ('branch5x5_2', 48, 64, (5, 5), 1, (2, 2)),
          ('branch3x3dbl_1', c, 64, (1, 1), 1, (0, 0)), ('branch3x3dbl_2', 64, 96, (3, 3), 1, (1, 1)),
          ('branch3x3dbl_3', 96, 96, (3, 3), 1, (1, 1)), ('branch_pool', c, pool, (1, 1), 1, (0, 0)))


def _block_b(c):
  return (('branch3x3', c, 384, (3, 3), 2, (0, 0)),
          ('branch3x3dbl_1', c, 64, (1, 1), 1, (0, 0)), ('branch3x3dbl_2', 64, 96, (3, 3), 1, (1, 1)),
          ('branch3x3dbl_3', 96, 96, (3, 3), 2, (0, 0)))


def _block_c(c, c7):
  row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))
  return (('branch1x1', c, 192, (1, 1), 1, (0, 0)),
          ('branch7x7_1', c, c7, (1, 1), 1, (0, 0)), ('branch7x7_2', c7, c7, row[0], 1, row[1]),
          ('branch7x7_3', c7, 192, col[0], 1, col[1]),
          ('branch7x7dbl_1', c, c7, (1, 1), 1, (0, 0)), ('branch7x7dbl_2', c7, c7, col[0], 1, col[1]),
          ('branch7x7dbl_3', c7, c7, row[0], 1, row[1]), ('branch7x7dbl_4', c7, c7, col[0], 1, col[1]),
          ('branch7x7dbl_5', c7, 192, row[0], 1, row[1]), ('branch_pool', c, 192, (1, 1), 1, (0, 0)))


def _block_d(c):
  return (('branch3x3_1', c, 192, (1, 1), 1, (0, 0)), ('branch3x3_2', 192, 320, (3, 3), 2, (0, 0)),
          ('branch7x7x3_1', c, 192, (1, 1), 1, (0, 0)), ('branch7x7x3_2', 192, 192, (1, 7), 1, (0, 3)),
          ('branch7x7x3_3', 192, 192, (7, 1), 1, (3, 0)), ('branch7x7x3_4', 192, 192, (3, 3), 2, (0, 0)))


def _block_e(c):
  return (('branch1x1', c, 320, (1, 1), 1, (0, 0)),
          ('branch3x3_1', c, 384, (1, 1), 1, (0, 0)), ('branch3x3_2a', 384, 384, (1, 3), 1, (0, 1)),
          ('branch3x3_2b', 384, 384, (3, 1), 1, (1, 0)),
          ('branch3x3dbl_1', c, 448, (1, 1), 1, (0, 0)), ('branch3x3dbl_2', 448, 384, (3, 3), 1, (1, 1)),
          ('branch3x3dbl_3a', 384, 384, (1, 3), 1, (0, 1)), ('branch3x3dbl_3b', 384, 384, (3, 1), 1, (1, 0)),
          ('branch_pool', c, 192, (1, 1), 1, (0, 0)))


_MIXED = (('Mixed_5b', _block_a(192, 32)), ('Mixed_5c', _block_a(256, 64)), ('Mixed_5d', _block_a(288, 64)),
          ('Mixed_6a', _block_b(288)), ('Mixed_6b', _block_c(768, 128)), ('Mixed_6c', _block_c(768, 160)),
          ('Mixed_6d', _block_c(768, 160)), ('Mixed_6e', _block_c(768, 192)), ('Mixed_7a', _block_d(768)),
          ('Mixed_7b', _block_e(1280)), ('Mixed_7c', _block_e(2048)))


def _units():
  """(state-dict prefix, spec) of every conv unit."""
  units = [(name, spec) for name, *spec in _STEM]
  for block, convs in _MIXED:
    units += [(f'{block}.{name}', spec) for name, *spec in convs]
  return units


_SPECS = dict(_units())


def weight_shapes() -> dict:
  """State-dict name -> shape (kernels HWIO) of every array the network reads."""
  shapes = {}
  for prefix, (c_in, c_out, (kh, kw), _, _) in _units():
    shapes[f'{prefix}.conv.weight'] = (kh, kw, c_in, c_out)
    for stat in ('weight', 'bias', 'running_mean', 'running_var'):
      shapes[f'{prefix}.bn.{stat}'] = (c_out,)
  shapes['fc.weight'] = (FEATURE_DIM, NUM_LOGITS)  # Stored transposed: features @ weight.
  shapes['fc.bias'] = (NUM_LOGITS,)
  return shapes


def random_weights(seed: int = 0) -> dict:
  """Weights of the right shapes with a finite, non-degenerate forward pass (tests and parity checks)."""
  rng = np.random.default_rng(seed)
  weights = {}
  for name, shape in weight_shapes().items():
    if name.endswith('conv.weight'):
      fan_in = shape[0] * shape[1] * shape[2]
      weights[name] = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    elif name.endswith('running_var'):
      weights[name] = rng.uniform(0.5, 1.5, shape)
    elif name.endswith('bn.weight'):
      weights[name] = rng.uniform(0.5, 1.5, shape)
    elif name == 'fc.weight':
      weights[name] = rng.normal(0.0, np.sqrt(1.0 / FEATURE_DIM), shape)
    else:
      weights[name] = rng.normal(0.0, 0.1, shape)
  return {name: value.astype(np.float32) for name, value in weights.items()}


def from_state_dict(state_dict: dict, source: str = 'the state dict') -> dict:
  """The network's weights from pytorch-fid's state dict (numpy arrays, PyTorch layouts): conv kernels
  [out, in, h, w] go to HWIO and fc.weight [1008, 2048] is transposed. Batch-norm step counters are dropped. A
  missing, unexpected or wrong-shaped array is an error naming it."""
  arrays = {name: np.asarray(value, np.float32) for name, value in state_dict.items()
            if not name.endswith('num_batches_tracked')}
  expected = weight_shapes()
  missing = sorted(set(expected) - set(arrays))
  unexpected = sorted(set(arrays) - set(expected))
  if missing or unexpected:
    raise ValueError(f'{source} is not the FID Inception-v3 (pytorch-fid layout): missing {missing[:5]}'
                     f'{" ..." if len(missing) > 5 else ""}, unexpected {unexpected[:5]}'
                     f'{" ..." if len(unexpected) > 5 else ""}')
  weights = {}
  for name, value in arrays.items():
    if name.endswith('conv.weight') and value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)
    elif name == 'fc.weight' and value.ndim == 2:
      value = value.T
    if value.shape != expected[name]:
      raise ValueError(f'{source}: {name} has shape {value.shape} after conversion, expected {expected[name]}')
    weights[name] = value
  return weights


def to_state_dict(weights: dict) -> dict:
  """The inverse of from_state_dict: PyTorch layouts (for exporting to the reference network)."""
  state_dict = {}
  for name, value in weights.items():
    value = np.asarray(value)
    if name.endswith('conv.weight'):
      value = value.transpose(3, 2, 0, 1)
    elif name == 'fc.weight':
      value = value.T
    state_dict[name] = np.ascontiguousarray(value)
  return state_dict


def read_state_dict(path: str) -> dict:
  """name -> numpy array from a .pth / .pt (PyTorch, weights only), .safetensors or .npz file."""
  if not path:
    raise ValueError(f'FID and IS need the FID Inception-v3 weights as a local file: set --config.eval.inception=PATH '
                     f'(pytorch-fid publishes them at {PUBLISHED_AT}).')
  if not os.path.exists(path):
    raise FileNotFoundError(f'Inception weights file {path!r} not found; nothing is downloaded at run time. The '
                            f'weights are published at {PUBLISHED_AT}; pass the downloaded file or its conversion '
                            '(python -m fewstep_jax.eval.inception --src=FILE --out=FILE.npz).')
  return weight_files.read_state_dict(path)


def load_weights(path: str) -> dict:
  """The FID Inception-v3 weights from `path` (see read_state_dict), checked name by name and shape by shape."""
  return from_state_dict(read_state_dict(path), source=path)


def save_weights(path: str, weights: dict):
  """Writes converted weights as the .npz that load_weights reads back without PyTorch (HWIO kernels are turned
  back to the state dict's layout, so the file is the state dict itself)."""
  files.write_npz(path, to_state_dict(weights))


def _bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
  """[size_out, size_in] rows of PyTorch's bilinear interpolation weights (align_corners=False, no antialias):
  source coordinate (i + 0.5) * size_in / size_out - 0.5, clamped at 0, between floor and floor + 1."""
  source = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
  source = np.maximum(source, 0.0)
  low = np.floor(source).astype(np.int64)
  high = np.minimum(low + 1, size_in - 1)
  fraction = source - low
  matrix = np.zeros((size_out, size_in), np.float64)
  np.add.at(matrix, (np.arange(size_out), low), 1.0 - fraction)
  np.add.at(matrix, (np.arange(size_out), high), fraction)
  return matrix.astype(np.float32)


def preprocess(images, resolution: int = RESOLUTION):
  """Images [B, H, W, C] in [-1, 1] (C = 1 or 3) -> the network's input [B, res, res, 3] in [-1, 1], as pytorch-fid
  reads saved 8-bit images."""
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f'Inception features need images [B, H, W, 1 or 3]; got shape {images.shape}')
  pixels = jnp.clip(jnp.floor(images.astype(jnp.float32) * 127.5 + 128.0), 0.0, 255.0) / 255.0
  if pixels.shape[-1] == 1:
    pixels = jnp.repeat(pixels, 3, axis=-1)
  rows = _bilinear_matrix(pixels.shape[1], resolution)
  cols = _bilinear_matrix(pixels.shape[2], resolution)
  pixels = jnp.einsum('oh,bhwc->bowc', rows, pixels, precision=_EXACT)
  pixels = jnp.einsum('pw,bowc->bopc', cols, pixels, precision=_EXACT)
  return 2.0 * pixels - 1.0


def _unit(weights, prefix, x):
  """Conv (no bias) + batch norm (inference statistics) + ReLU."""
  _, _, _, stride, (ph, pw) = _SPECS[prefix]
  x = jax.lax.conv_general_dilated(x, weights[f'{prefix}.conv.weight'], (stride, stride), ((ph, ph), (pw, pw)),
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=_EXACT)
  scale = weights[f'{prefix}.bn.weight'] * jax.lax.rsqrt(weights[f'{prefix}.bn.running_var'] + BN_EPS)
  return jax.nn.relu((x - weights[f'{prefix}.bn.running_mean']) * scale + weights[f'{prefix}.bn.bias'])


def _max_pool(x, stride, padding='VALID'):
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1), padding)


def _avg_pool_valid_count(x):
  """3x3 stride-1 average over the window's in-image pixels only (TF's SAME pooling; count_include_pad=False)."""
  window, strides, padding = (1, 3, 3, 1), (1, 1, 1, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, padding)
  count = jax.lax.reduce_window(jnp.ones(x.shape[1:3], x.dtype)[None, :, :, None], 0.0, jax.lax.add, window,
                                strides, padding)
  return total / count


def _chain(weights, block, names, x):
  for name in names:
    x = _unit(weights, f'{block}.{name}', x)
  return x


def _mixed_a(w, b, x):
  return jnp.concatenate([
      _chain(w, b, ['branch1x1'], x),
      _chain(w, b, ['branch5x5_1', 'branch5x5_2'], x),
      _chain(w, b, ['branch3x3dbl_1', 'branch3x3dbl_2', 'branch3x3dbl_3'], x),
      _chain(w, b, ['branch_pool'], _avg_pool_valid_count(x))], axis=-1)


def _mixed_b(w, b, x):
  return jnp.concatenate([
      _chain(w, b, ['branch3x3'], x),
      _chain(w, b, ['branch3x3dbl_1', 'branch3x3dbl_2', 'branch3x3dbl_3'], x),
      _max_pool(x, 2)], axis=-1)


def _mixed_c(w, b, x):
  return jnp.concatenate([
      _chain(w, b, ['branch1x1'], x),
      _chain(w, b, ['branch7x7_1', 'branch7x7_2', 'branch7x7_3'], x),
      _chain(w, b, [f'branch7x7dbl_{i}' for i in range(1, 6)], x),
      _chain(w, b, ['branch_pool'], _avg_pool_valid_count(x))], axis=-1)


def _mixed_d(w, b, x):
  return jnp.concatenate([
      _chain(w, b, ['branch3x3_1', 'branch3x3_2'], x),
      _chain(w, b, [f'branch7x7x3_{i}' for i in range(1, 5)], x),
      _max_pool(x, 2)], axis=-1)


def _mixed_e(w, b, x, max_pool: bool):
  branch3x3 = _chain(w, b, ['branch3x3_1'], x)
  branch3x3dbl = _chain(w, b, ['branch3x3dbl_1', 'branch3x3dbl_2'], x)
  pooled = _max_pool(x, 1, ((0, 0), (1, 1), (1, 1), (0, 0))) if max_pool else _avg_pool_valid_count(x)
  return jnp.concatenate([
      _chain(w, b, ['branch1x1'], x),
      _chain(w, b, ['branch3x3_2a'], branch3x3), _chain(w, b, ['branch3x3_2b'], branch3x3),
      _chain(w, b, ['branch3x3dbl_3a'], branch3x3dbl), _chain(w, b, ['branch3x3dbl_3b'], branch3x3dbl),
      _chain(w, b, ['branch_pool'], pooled)], axis=-1)


def network(weights, x):
  """The network on its input x [B, H, W, 3] in [-1, 1] (H, W >= 75): (pool3 features [B, 2048], logits
  [B, 1008])."""
  for name, *_ in _STEM[:3]:
    x = _unit(weights, name, x)
  x = _max_pool(x, 2)
  for name, *_ in _STEM[3:]:
    x = _unit(weights, name, x)
  x = _max_pool(x, 2)
  for block in ('Mixed_5b', 'Mixed_5c', 'Mixed_5d'):
    x = _mixed_a(weights, block, x)
  x = _mixed_b(weights, 'Mixed_6a', x)
  for block in ('Mixed_6b', 'Mixed_6c', 'Mixed_6d', 'Mixed_6e'):
    x = _mixed_c(weights, block, x)
  x = _mixed_d(weights, 'Mixed_7a', x)
  x = _mixed_e(weights, 'Mixed_7b', x, max_pool=False)
  x = _mixed_e(weights, 'Mixed_7c', x, max_pool=True)
  features = jnp.mean(x, axis=(1, 2))
  return features, jnp.dot(features, weights['fc.weight'], precision=_EXACT) + weights['fc.bias']


def features_and_logits(weights, images, resolution: int = RESOLUTION):
  """Images [B, H, W, C] in [-1, 1] -> (pool3 features [B, 2048], logits [B, 1008]), float32."""
  return network(weights, preprocess(images, resolution))


def main(argv):
  del argv
  from absl import flags
  source, out = flags.FLAGS.src, flags.FLAGS.out
  save_weights(out, load_weights(source))
  print(f'FID Inception-v3 weights from {source} written to {out}; load them with numpy alone '
        f'(--config.eval.inception={out})')


def define_flags():
  from absl import flags
  flags.DEFINE_string('src', None, "pytorch-fid's .pth, or a .safetensors of the same state dict")
  flags.DEFINE_string('out', None, 'the .npz to write')
  flags.mark_flags_as_required(['src', 'out'])


if __name__ == '__main__':
  from fewstep_jax import cli
  define_flags()
  cli.run(main)

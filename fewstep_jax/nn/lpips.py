"""LPIPS (Zhang et al. 2018, VGG16 variant) as a consistency-model distance, from a local weights file.

  d(a, b) = sum_l mean_{h,w} sum_c w_lc (u_l(a) - u_l(b))_{hwc}^2,   u_l = VGG16 features at relu1_2, relu2_2,
            relu3_3, relu4_3, relu5_3, each unit-normalised over channels

Inputs are images in [-1, 1], [B, H, W, C] with C = 3 (or 1, repeated to RGB). As in the consistency-model
papers, both are resized bilinearly to `resolution` (224) first: small images would vanish in VGG's four
poolings.

Nothing downloads weights. The file is an .npz with, for each of the 13 convolutions named `conv{block}_{i}`
(conv1_1 ... conv5_3), `<name>/kernel` [3, 3, C_in, C_out] (HWIO) and `<name>/bias` [C_out], and the five
non-negative channel weights `lin0` ... `lin4` [C_l]. Convert the published VGG16 and LPIPS (v0.1) weights to it
once, on a machine that has them: a PyTorch conv weight [C_out, C_in, 3, 3] transposes to HWIO with (2, 3, 1, 0),
and LPIPS's lin layer `lin{l}.model.1.weight` [1, C_l, 1, 1] flattens to [C_l].
"""
import os

import jax
import jax.numpy as jnp
import numpy as np

VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# LPIPS's input scaling: (x - shift) / scale per RGB channel, for x in [-1, 1].
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)


def weight_shapes() -> dict:
  """name -> shape of every array the weights file must hold."""
  shapes, channels = {}, 3
  for block, widths in enumerate(VGG16_BLOCKS, start=1):
    for i, width in enumerate(widths, start=1):
      shapes[f'conv{block}_{i}/kernel'] = (3, 3, channels, width)
      shapes[f'conv{block}_{i}/bias'] = (width,)
      channels = width
    shapes[f'lin{block - 1}'] = (channels,)
  return shapes


def load_weights(path: str) -> dict:
  """The LPIPS weights from the .npz at `path`, checked name by name and shape by shape."""
  if not path:
    raise ValueError('distance=lpips needs its weights as a local file: set --config.method.lpips_weights=PATH '
                     '(an .npz, layout in fewstep_jax/nn/lpips.py), or use distance=pseudo_huber or l2.')
  if not os.path.exists(path):
    raise FileNotFoundError(f'LPIPS weights file {path!r} not found; nothing is downloaded at run time. Convert '
                            'the VGG16 + LPIPS weights to the .npz layout of fewstep_jax/nn/lpips.py and pass its '
                            'path, or use distance=pseudo_huber.')
  with np.load(path) as file:
    stored = {name: np.asarray(file[name], np.float32) for name in file.files}
  expected = weight_shapes()
  missing = sorted(set(expected) - set(stored))
  wrong = sorted(n for n in set(expected) & set(stored) if stored[n].shape != expected[n])
  if missing or wrong:
    raise ValueError(f'LPIPS weights file {path!r} does not match the VGG16 layout: missing {missing[:6]}'
                     f'{"..." if len(missing) > 6 else ""}, wrong shapes '
                     f'{[(n, stored[n].shape, expected[n]) for n in wrong[:6]]}.')
  return {name: stored[name] for name in expected}


def vgg_features(weights: dict, images):
  """The five unit-normalised VGG16 feature maps of images [B, H, W, 3] (already LPIPS-scaled)."""
  features, x = [], images
  for block, widths in enumerate(VGG16_BLOCKS, start=1):
    if block > 1:
      x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), 'VALID')
    for i in range(1, len(widths) + 1):
      kernel, bias = weights[f'conv{block}_{i}/kernel'], weights[f'conv{block}_{i}/bias']
      x = jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1), 'SAME',
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      x = jax.nn.relu(x + bias.astype(x.dtype))
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
    features.append(x / (norm + 1e-10))
  return features


def make_lpips(data_shape: tuple, resolution: int = 224):
  """fn(a [B, H, W, C], b, weights) -> LPIPS distance [B] for images of per-example shape data_shape."""
  if len(data_shape) != 3 or data_shape[-1] not in (1, 3):
    raise ValueError(f'distance=lpips needs RGB or grayscale images [H, W, 1 or 3]; this data has shape '
                     f'{tuple(data_shape)}. Use distance=pseudo_huber or l2.')
  if resolution < 16:
    raise ValueError(f'lpips_resolution={resolution} is too small for VGG16\'s four poolings; use 16 or more.')

  def prepare(x):
    if x.shape[-1] == 1:
      x = jnp.repeat(x, 3, axis=-1)
    x = jax.image.resize(x, (x.shape[0], resolution, resolution, 3), 'bilinear')
    return (x - SHIFT) / SCALE

  def distance(a, b, weights):
    total = 0.0
    # One VGG pass over both batches.
    both = vgg_features(weights, prepare(jnp.concatenate([a, b])))
    for level, features in enumerate(both):
      fa, fb = jnp.split(features, 2)
      weighted = jnp.square(fa - fb) * weights[f'lin{level}'].astype(fa.dtype)
      total = total + jnp.mean(jnp.sum(weighted, axis=-1), axis=(1, 2))
    return total

  return distance

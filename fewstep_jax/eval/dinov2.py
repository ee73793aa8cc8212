"""DINOv2 ViT-L/14 in JAX: the features of FD-DINOv2 as EDM2 computes it.

EDM2 (`calculate_metrics.py`, `DINOv2Detector`, its default resize_mode 'torch') takes 8-bit images, resizes them
to 224 x 224 with `F.interpolate(mode='bicubic', antialias=True)`, divides by 255, normalises with the ImageNet
mean and standard deviation, and keeps the output of torch.hub's `dinov2_vitl14`: the class token after the final
layer norm, 1024 numbers. The network follows `dinov2/models/vision_transformer.py` (`DinoVisionTransformer`) as
`dinov2/hub/backbones.py` builds it: 14 x 14 patches, a class token, position embeddings trained on a 37 x 37 grid
(518 pixels) and resampled to the 16 x 16 grid of 224 pixels with the repository's bicubic `interpolate_pos_encoding`
(scale factor (16 + 0.1) / 37, no antialiasing), pre-norm blocks with layer scale, exact GELU, layer norms with
eps 1e-6.

A sample in [-1, 1] is quantised to 8 bits as for the Inception (eval/inception.py): (x * 127.5 + 128) clipped
and truncated. Weights come from a local
file: the published `dinov2_vitl14_pretrain.pth` (PyTorch, weights only), the same state dict as `.safetensors`,
or the `.npz` conversion `python -m fewstep_jax.eval.dinov2 --src=FILE --out=FILE.npz` writes, which numpy reads.
Arrays keep the state dict's names and layouts; they are transposed for JAX when loaded.
"""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from fewstep_jax import weight_files
from fewstep_jax.train import files

PUBLISHED_AT = 'https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth'
RESOLUTION = 224
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
LN_EPS = 1e-6
_EXACT = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class ViT:
  """The architecture's sizes; the default is dinov2_vitl14."""
  dim: int = 1024
  depth: int = 24
  heads: int = 16
  mlp_ratio: int = 4
  patch: int = 14
  pos_grid: int = 37  # Position embeddings of the 518-pixel training resolution.
  interpolate_offset: float = 0.1


VIT_L14 = ViT()


def weight_shapes(vit: ViT = VIT_L14) -> dict:
  """State-dict name -> shape (PyTorch layouts) of every array the network reads."""
  d, hidden = vit.dim, vit.dim * vit.mlp_ratio
  shapes = {'cls_token': (1, 1, d), 'pos_embed': (1, vit.pos_grid ** 2 + 1, d),
            'patch_embed.proj.weight': (d, 3, vit.patch, vit.patch), 'patch_embed.proj.bias': (d,),
            'norm.weight': (d,), 'norm.bias': (d,)}
  for i in range(vit.depth):
    block = {'norm1.weight': (d,), 'norm1.bias': (d,), 'attn.qkv.weight': (3 * d, d), 'attn.qkv.bias': (3 * d,),
             'attn.proj.weight': (d, d), 'attn.proj.bias': (d,), 'ls1.gamma': (d,), 'norm2.weight': (d,),
             'norm2.bias': (d,), 'mlp.fc1.weight': (hidden, d), 'mlp.fc1.bias': (hidden,),
             'mlp.fc2.weight': (d, hidden), 'mlp.fc2.bias': (d,), 'ls2.gamma': (d,)}
    shapes.update({f'blocks.{i}.{name}': shape for name, shape in block.items()})
  return shapes


def random_weights(vit: ViT = VIT_L14, seed: int = 0) -> dict:
  """A state dict of the right shapes with a non-degenerate forward pass (tests and parity checks)."""
  rng = np.random.default_rng(seed)
  weights = {}
  for name, shape in weight_shapes(vit).items():
    if name.endswith(('norm1.weight', 'norm2.weight', 'norm.weight')):
      weights[name] = 1.0 + 0.1 * rng.normal(size=shape)
    elif name.endswith('gamma'):
      weights[name] = rng.uniform(0.1, 1.0, shape)
    elif name.endswith('weight'):
      fan_in = int(np.prod(shape[1:]))
      weights[name] = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
    else:
      weights[name] = rng.normal(0.0, 0.1 if name.endswith('bias') else 0.5, shape)
  return {name: value.astype(np.float32) for name, value in weights.items()}


def infer_vit(state_dict: dict) -> ViT:
  """The sizes of a state dict's ViT (heads from the published models: 64-dimensional heads)."""
  dim = state_dict['cls_token'].shape[-1]
  depth = len({name.split('.')[1] for name in state_dict if name.startswith('blocks.')})
  grid = int(round((state_dict['pos_embed'].shape[1] - 1) ** 0.5))
  return ViT(dim=dim, depth=depth, heads=dim // 64, mlp_ratio=state_dict['blocks.0.mlp.fc1.weight'].shape[0] // dim,
             patch=state_dict['patch_embed.proj.weight'].shape[-1], pos_grid=grid)


def _cubic_weight(x, a):
  x = np.abs(x)
  return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                  np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0))


def _bicubic_matrix(size_in: int, size_out: int, scale: float) -> np.ndarray:
  """[size_out, size_in] weights of PyTorch's bicubic interpolation without antialiasing (a = -0.75,
  align_corners=False, out-of-range taps clamped to the edge), the source coordinate (i + 0.5) / scale - 0.5 for a
  given scale factor."""
  source = (np.arange(size_out) + 0.5) / scale - 0.5
  low = np.floor(source)
  t = source - low
  matrix = np.zeros((size_out, size_in), np.float64)
  for offset in (-1, 0, 1, 2):
    taps = np.clip(low + offset, 0, size_in - 1).astype(np.int64)
    np.add.at(matrix, (np.arange(size_out), taps), _cubic_weight(t - offset, -0.75))
  return matrix


def _antialiased_bicubic_matrix(size_in: int, size_out: int) -> np.ndarray:
  """[size_out, size_in] weights of F.interpolate(mode='bicubic', antialias=True) (PIL's filter: a = -0.5, widened
  by the shrink factor when shrinking, normalised over the in-image taps)."""
  scale = size_in / size_out
  support = 2.0 * max(scale, 1.0)
  stretch = 1.0 / max(scale, 1.0)
  matrix = np.zeros((size_out, size_in), np.float64)
  for i in range(size_out):
    centre = scale * (i + 0.5)
    low = max(int(centre - support + 0.5), 0)
    high = min(int(centre + support + 0.5), size_in)
    taps = np.arange(low, high)
    weights = _cubic_weight((taps - centre + 0.5) * stretch, -0.5)
    matrix[i, low:high] = weights / weights.sum()
  return matrix


def position_embedding(pos_embed, vit: ViT, resolution: int = RESOLUTION):
  """The [1, 1 + g * g, dim] position embeddings of a `resolution` input, g = resolution / patch:
  `interpolate_pos_encoding` of the reference (bicubic, scale factor (g + offset) / pos_grid), in float64."""
  grid = resolution // vit.patch
  pos_embed = np.asarray(pos_embed, np.float64)
  if grid == vit.pos_grid:
    return pos_embed.astype(np.float32)
  matrix = _bicubic_matrix(vit.pos_grid, grid, (grid + vit.interpolate_offset) / vit.pos_grid)
  patches = pos_embed[0, 1:].reshape(vit.pos_grid, vit.pos_grid, -1)
  patches = np.einsum('ih,jw,hwd->ijd', matrix, matrix, patches).reshape(1, grid * grid, -1)
  return np.concatenate([pos_embed[:, :1], patches], axis=1).astype(np.float32)


def from_state_dict(state_dict: dict, source: str = 'the state dict', resolution: int = RESOLUTION):
  """(ViT, weights for `network`) from a DINOv2 state dict (numpy, PyTorch layouts): Linear weights transposed to
  [in, out], the patch convolution to HWIO, the position embeddings resampled for `resolution`. The mask token is
  dropped (unused at inference). A missing, unexpected or wrong-shaped array is an error naming it."""
  arrays = {name: np.asarray(value, np.float32) for name, value in state_dict.items() if name != 'mask_token'}
  try:
    vit = infer_vit(arrays)
  except (KeyError, IndexError) as error:
    raise ValueError(f'{source} is not a DINOv2 ViT state dict (no {error})') from error
  expected = weight_shapes(vit)
  missing = sorted(set(expected) - set(arrays))
  unexpected = sorted(set(arrays) - set(expected))
  wrong = sorted(name for name in set(expected) & set(arrays) if arrays[name].shape != expected[name])
  if missing or unexpected or wrong:
    raise ValueError(f'{source} is not a DINOv2 ViT ({vit}): missing {missing[:5]}, unexpected {unexpected[:5]}, '
                     f'wrong shapes {[(name, arrays[name].shape, expected[name]) for name in wrong[:5]]}')
  weights = {}
  for name, value in arrays.items():
    if name == 'patch_embed.proj.weight':
      value = value.transpose(2, 3, 1, 0)
    elif name.endswith('.weight') and value.ndim == 2:
      value = value.T
    elif name == 'pos_embed':
      value = position_embedding(value, vit, resolution)
    weights[name] = value
  return vit, weights


def read_state_dict(path: str) -> dict:
  """name -> numpy array from a .pth (PyTorch, weights only), .safetensors or .npz DINOv2 state dict."""
  if not path:
    raise ValueError(f'FD-DINOv2 needs the DINOv2 ViT-L/14 weights as a local file: set --config.eval.dinov2=PATH '
                     f'(published at {PUBLISHED_AT}).')
  if not os.path.exists(path):
    raise FileNotFoundError(f'DINOv2 weights file {path!r} not found; nothing is downloaded at run time. The weights '
                            f'are published at {PUBLISHED_AT}; pass the downloaded file or its conversion '
                            '(python -m fewstep_jax.eval.dinov2 --src=FILE --out=FILE.npz).')
  return weight_files.read_state_dict(path)


def load_weights(path: str, resolution: int = RESOLUTION):
  """(ViT, weights) from a .pth, .safetensors or .npz DINOv2 state dict at `path` (see read_state_dict)."""
  return from_state_dict(read_state_dict(path), source=path, resolution=resolution)


def save_state_dict(path: str, state_dict: dict):
  """Writes a state dict (numpy arrays) as the .npz load_weights reads without PyTorch."""
  files.write_npz(path, {name: np.asarray(value) for name, value in state_dict.items()})


def preprocess(images, resolution: int = RESOLUTION):
  """Images [B, H, W, C] in [-1, 1] (C = 1 or 3) -> the network's normalised input [B, res, res, 3]."""
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f'DINOv2 features need images [B, H, W, 1 or 3]; got shape {images.shape}')
  pixels = jnp.clip(jnp.floor(images.astype(jnp.float32) * 127.5 + 128.0), 0.0, 255.0)
  if pixels.shape[-1] == 1:
    pixels = jnp.repeat(pixels, 3, axis=-1)
  rows = _antialiased_bicubic_matrix(pixels.shape[1], resolution).astype(np.float32)
  cols = _antialiased_bicubic_matrix(pixels.shape[2], resolution).astype(np.float32)
  pixels = jnp.einsum('oh,bhwc->bowc', rows, pixels, precision=_EXACT)
  pixels = jnp.einsum('pw,bowc->bopc', cols, pixels, precision=_EXACT)
  return (pixels / 255.0 - MEAN) / STD


def _layer_norm(x, weight, bias):
  mean = jnp.mean(x, axis=-1, keepdims=True)
  variance = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(variance + LN_EPS) * weight + bias


def _linear(x, weights, name):
  return jnp.dot(x, weights[f'{name}.weight'], precision=_EXACT) + weights[f'{name}.bias']


def _block(weights, prefix, x, heads: int):
  w = {name[len(prefix):]: value for name, value in weights.items() if name.startswith(prefix)}
  batch, tokens, dim = x.shape
  qkv = _linear(_layer_norm(x, w['norm1.weight'], w['norm1.bias']), w, 'attn.qkv')
  q, k, v = jnp.moveaxis(qkv.reshape(batch, tokens, 3, heads, dim // heads), 2, 0)
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k, precision=_EXACT) * (dim // heads) ** -0.5
  attended = jnp.einsum('bhqk,bkhd->bqhd', jax.nn.softmax(logits, axis=-1), v, precision=_EXACT)
  x = x + w['ls1.gamma'] * _linear(attended.reshape(batch, tokens, dim), w, 'attn.proj')
  hidden = jax.nn.gelu(_linear(_layer_norm(x, w['norm2.weight'], w['norm2.bias']), w, 'mlp.fc1'), approximate=False)
  return x + w['ls2.gamma'] * _linear(hidden, w, 'mlp.fc2')


def network(vit: ViT, weights, x):
  """The ViT on its normalised input x [B, H, W, 3] (H, W multiples of the patch): the normalised class token
  [B, dim]."""
  patches = jax.lax.conv_general_dilated(x, weights['patch_embed.proj.weight'], (vit.patch, vit.patch), 'VALID',
                                         dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=_EXACT)
  patches = patches + weights['patch_embed.proj.bias']
  batch = x.shape[0]
  tokens = jnp.concatenate([jnp.broadcast_to(weights['cls_token'], (batch, 1, vit.dim)),
                            patches.reshape(batch, -1, vit.dim)], axis=1)
  tokens = tokens + weights['pos_embed']
  for i in range(vit.depth):
    tokens = _block(weights, f'blocks.{i}.', tokens, vit.heads)
  return _layer_norm(tokens[:, 0], weights['norm.weight'], weights['norm.bias'])


def features(vit: ViT, weights, images, resolution: int = RESOLUTION):
  """Images [B, H, W, C] in [-1, 1] -> FD-DINOv2 features [B, dim]."""
  return network(vit, weights, preprocess(images, resolution))


def main(argv):
  del argv
  from absl import flags
  source, out = flags.FLAGS.src, flags.FLAGS.out
  state_dict = read_state_dict(source)
  from_state_dict(state_dict, source=source)  # Checked before it is written.
  save_state_dict(out, {name: value for name, value in state_dict.items() if name != 'mask_token'})
  print(f'DINOv2 weights from {source} written to {out}; load them with numpy alone (--config.eval.dinov2={out})')


def define_flags():
  from absl import flags
  flags.DEFINE_string('src', None, 'dinov2_vitl14_pretrain.pth, or a .safetensors of it')
  flags.DEFINE_string('out', None, 'the .npz to write')
  flags.mark_flags_as_required(['src', 'out'])


if __name__ == '__main__':
  from fewstep_jax import cli
  define_flags()
  cli.run(main)

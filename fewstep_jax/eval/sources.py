"""Images for the FID family of metrics read from files, besides a config's dataset: a folder of image files or an
array of samples, as batches the evaluator's feature networks take (float32 [b, H, W, C] in [-1, 1]); and the test
that tells an `.npz` of statistics (`mu`, `sigma`) from one of samples. `python -m fewstep_jax.eval.stats
--images=DIR | --samples=FILE` and `python -m fewstep_jax.eval.fid A B` read through `open_images`.

A folder: every file under it, in its subfolders too (EDM's generate.py writes samples in subfolders of 1000;
pytorch-fid reads the top level only; linked folders are not followed), whose extension, in any letter case, is one
pytorch-fid reads (IMAGE_EXTENSIONS), in the sorted order of the paths. Each file is decoded by PIL and converted to RGB
at its own size, as pytorch-fid's ImagePathDataset does (`Image.open(path).convert('RGB')`: a gray image repeated to
three
channels, an alpha channel dropped, a palette looked up). Images of any size are accepted; they are batched by size,
so a folder of one size is a single compiled network.

An array of samples: an `.npz`'s `arr_0` (ADM's sample batches, `np.savez(path, images)`), or its only array, or an
`.npy`: [N, H, W, C] with C = 1 or 3 ([N, C, H, W] is transposed), either uint8 pixels 0..255 or floats in
[-1, 1] as this project's samples are (the dtype decides; the output line says which; floats beyond +-2, 0..255
pixels stored as floats, are refused, and first samples with no negative value, images in [0, 1], are warned of).
Labels beside the images (ADM's arr_1) are ignored. The array is read in batches from the file, never whole.

8-bit pixels v become v / 127.5 - 1 (data.digits_arrays.to_model_range, as the dataset's reference images do), which
the networks' preprocessing quantises back to exactly v (floor(x * 127.5 + 128): float32 rounding stays far within
the 0.5 margin). So an image file takes the evaluator's path for a sample, which is pytorch-fid's for a file: for
the Inception (eval/inception.py) the values v / 255 (ToTensor), resized to 299 x 299 by
`F.interpolate(mode='bilinear', align_corners=False)` without antialiasing, whatever the image's size (non-square
images are stretched), then 2x - 1; for DINOv2 (eval/dinov2.py) EDM2's antialiased bicubic resize to 224 and the
ImageNet normalisation. A folder of the evaluator's own samples written as PNG (quantised as the evaluator
quantises, floor(x * 127.5 + 128) clipped to 0..255, as EDM writes its samples) therefore has the evaluator's
statistics of those samples, to the rounding of a batch's arithmetic.
"""
import concurrent.futures
import contextlib
import dataclasses
import functools
import os
import sys
import zipfile
from typing import Callable

import numpy as np

from fewstep_jax.data.digits_arrays import to_model_range

IMAGE_EXTENSIONS = ('.bmp', '.jpg', '.jpeg', '.pgm', '.png', '.ppm', '.tif', '.tiff', '.webp')  # pytorch-fid's.
SAMPLES_KEY = 'arr_0'  # np.savez's name of its first positional array (ADM's sample batches).
# Floats beyond these are not [-1, 1] samples (a sampler may overshoot a little; the evaluator clips).
FLOAT_LIMIT = 2.0
_READ_THREADS = min(16, os.cpu_count() or 1)  # PIL decodes outside the GIL.


@dataclasses.dataclass(frozen=True)
class Images:
  """`count` images; `batches(batch_size)` yields them as float32 [b <= batch_size, H, W, C] in [-1, 1], C = 1 or
  3, the images of one size together."""
  description: str
  count: int
  batches: Callable


def is_statistics(path: str) -> bool:
  """Whether `path` is an .npz holding `mu` and `sigma` (reference statistics) rather than images."""
  if not (path.endswith('.npz') and os.path.isfile(path)):
    return False
  with _npz(path) as stored:
    return {'mu', 'sigma'} <= set(stored.files)


def open_images(path: str, limit: int = 0) -> Images:
  """The images of a folder (`folder`) or of an .npz / .npy of samples (`sample_array`); the first `limit` (0:
  all)."""
  if os.path.isdir(path):
    return folder(path, limit)
  if os.path.isfile(path):
    return sample_array(path, limit)
  raise FileNotFoundError(f'{path}: no such folder or file; give a folder of images, an .npz / .npy of samples or '
                          'an .npz of statistics (mu, sigma)')


def folder(directory: str, limit: int = 0) -> Images:
  """The image files under `directory` (see the module docstring), the first `limit` of them in sorted order (0:
  all). Every file's header is read here, so a file PIL cannot open is an error before any network runs."""
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'{directory}: no such folder of images')
  paths = image_paths(directory)
  if limit > 0:
    paths = paths[:limit]
  _check_count(directory, len(paths))
  with concurrent.futures.ThreadPoolExecutor(_READ_THREADS) as pool:
    sizes = list(pool.map(_image_size, paths))
  by_size = {}  # (width, height) -> paths, in sorted order; sizes in the order they first appear.
  for path, size in zip(paths, sizes):
    by_size.setdefault(size, []).append(path)

  def batches(batch_size: int):
    with concurrent.futures.ThreadPoolExecutor(_READ_THREADS) as pool:
      for group in by_size.values():
        for start in range(0, len(group), batch_size):
          yield to_model_range(np.stack(list(pool.map(_rgb_pixels, group[start:start + batch_size]))))

  return Images(f'{len(paths)} images of {directory} ({_sizes_text(list(by_size))})', len(paths), batches)


def _sizes_text(sizes: list) -> str:
  """'1 size: 32x32', '2 sizes: 32x32, 64x48', '5 sizes: 32x32, 64x48, 8x8, ...' (width x height)."""
  shown = ', '.join(f'{width}x{height}' for width, height in sizes[:3]) + (', ...' if len(sizes) > 3 else '')
  return f'{len(sizes)} size{"s" if len(sizes) > 1 else ""}: {shown}'


def image_paths(directory: str) -> list:
  """The image files under `directory` and its subfolders, sorted; an error naming the folder if there are none."""
  paths = sorted(os.path.join(root, name) for root, _, names in os.walk(directory)
                 for name in names if name.lower().endswith(IMAGE_EXTENSIONS))
  if not paths:
    raise ValueError(f'{directory} holds no image files (extensions {" ".join(IMAGE_EXTENSIONS)}, in it or its '
                     'subfolders)')
  return paths


def _check_count(source: str, count: int):
  if count < 2:
    raise ValueError(f'{source} holds {count} image{"" if count == 1 else "s"}; a covariance needs at least 2 (FID '
                     'is meant for thousands)')


@contextlib.contextmanager
def _image(path: str):
  from PIL import Image
  try:
    with Image.open(path) as image:
      yield image
  except (OSError, Image.DecompressionBombError) as error:
    raise ValueError(f'{path} is not a readable image ({error}); remove or replace it') from error


def _image_size(path: str) -> tuple:
  with _image(path) as image:
    return image.size


def _rgb_pixels(path: str) -> np.ndarray:
  """uint8 [H, W, 3]: the file decoded and converted to RGB, as pytorch-fid reads it."""
  with _image(path) as image:
    return np.asarray(image.convert('RGB'))


@contextlib.contextmanager
def _npz(path: str):
  try:
    with np.load(path) as stored:
      yield stored
  except (OSError, ValueError, zipfile.BadZipFile) as error:
    raise ValueError(f'{path} is not a readable .npz ({error})') from error


def sample_array(path: str, limit: int = 0) -> Images:
  """The images of an .npz's arr_0 (or its only array) or of an .npy (see the module docstring), the first `limit`
  (0: all), read from the file batch by batch."""
  key = _samples_key(path)
  with _array_stream(path, key) as (shape, dtype, read_rows):
    layout, pixels = _layout(path, shape, dtype)
    count = shape[0] if limit <= 0 else min(limit, shape[0])
    _check_count(path, count)
    if not pixels:
      _check_first_floats(path, read_rows(min(count, 64)))
  convert = to_model_range if pixels else functools.partial(_checked_floats, path)
  to_channels_last = (lambda rows: rows.transpose(0, 2, 3, 1)) if layout == 'NCHW' else (lambda rows: rows)

  def batches(batch_size: int):
    with _array_stream(path, key) as (_, _, read_rows):
      for start in range(0, count, batch_size):
        yield convert(to_channels_last(read_rows(min(batch_size, count - start))))

  name = path if key is None else f'{path}[{key}]'
  kind = 'uint8 pixels 0..255' if pixels else f'{dtype} read as [-1, 1]'
  height, width = shape[1:3] if layout == 'NHWC' else shape[2:4]
  return Images(f'{count} images of {name} ({kind}, {layout}, {width}x{height})', count, batches)


def _samples_key(path: str):
  """The .npz member holding the samples (arr_0, or the only array), or None for an .npy."""
  if path.endswith('.npy'):
    return None
  if not path.endswith('.npz'):
    raise ValueError(f'{path} is neither a folder nor an .npz / .npy of samples')
  with _npz(path) as stored:
    names = list(stored.files)
  if {'mu', 'sigma'} <= set(names):
    raise ValueError(f'{path} holds statistics (mu, sigma), not images')
  if SAMPLES_KEY in names:
    return SAMPLES_KEY
  if len(names) == 1:
    return names[0]
  raise ValueError(f'{path} holds arrays {sorted(names)}: expected the images as {SAMPLES_KEY} (np.savez(path, '
                   'images)) or as its only array, or statistics as mu and sigma')


def _layout(path: str, shape: tuple, dtype: np.dtype):
  """('NHWC' or 'NCHW', whether the values are 8-bit pixels) of a samples array, or an error naming the fix."""
  if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
    raise ValueError(f'{path}: samples of dtype {dtype}; store uint8 pixels 0..255 or floats in [-1, 1]')
  if len(shape) == 4 and shape[3] in (1, 3):
    layout = 'NHWC'
  elif len(shape) == 4 and shape[1] in (1, 3):
    layout = 'NCHW'
  else:
    raise ValueError(f'{path}: samples of shape {shape}; expected images [N, H, W, 3] (or 1 channel; [N, C, H, W] '
                     'is read too)')
  return layout, dtype == np.uint8


def _checked_floats(path: str, rows) -> np.ndarray:
  """[-1, 1] float samples as float32; values far outside (0..255 pixels stored as floats) are an error."""
  low, high = float(rows.min()), float(rows.max())
  if not (-FLOAT_LIMIT <= low and high <= FLOAT_LIMIT):  # Also a NaN.
    raise ValueError(f'{path}: float samples from {low:g} to {high:g}; floats are read as [-1, 1] (this project\'s '
                     'samples): store 0..255 pixels as uint8')
  return rows.astype(np.float32)


def _check_first_floats(path: str, rows):
  """Refuses floats far outside [-1, 1] in the first samples, and says so when they hold no negative value: images
  in [0, 1], read as [-1, 1], would give a wrong FID (real [-1, 1] images are rarely all brighter than mid-gray)."""
  _checked_floats(path, rows)
  if rows.min() >= 0.0 and rows.max() > 0.0:
    print(f'warning: {path}: the first {len(rows)} float samples hold no negative value; floats are read as [-1, 1] '
          '(images in [0, 1] need 2 * x - 1 first)', file=sys.stderr, flush=True)


@contextlib.contextmanager
def _array_stream(path: str, key):
  """(shape, dtype, read_rows(n) -> the next n rows) of the array in an .npy (key None) or an .npz member, read
  sequentially from the file (sample batches of 512-pixel ImageNet run to tens of GB)."""
  with contextlib.ExitStack() as stack:
    try:
      if key is None:
        stream = stack.enter_context(open(path, 'rb'))
      else:
        stream = stack.enter_context(stack.enter_context(zipfile.ZipFile(path)).open(f'{key}.npy'))
      shape, fortran_order, dtype = _read_header(stream)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
      raise ValueError(f'{path} is not a readable array of samples ({error})') from error
    if fortran_order or dtype.hasobject:
      raise ValueError(f'{path}: a {"Fortran-ordered" if fortran_order else "object"} array; store the samples with '
                       'np.savez(path, np.ascontiguousarray(images))')
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def read_rows(count: int):
      data = stream.read(count * row_bytes)
      if len(data) != count * row_bytes:
        raise ValueError(f'{path} is truncated: it ends within the samples array')
      return np.frombuffer(data, dtype).reshape((count,) + tuple(shape[1:]))
    yield tuple(shape), dtype, read_rows


def _read_header(stream):
  version = np.lib.format.read_magic(stream)
  readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
  if version not in readers:
    raise ValueError(f'.npy format version {version} (1.0 or 2.0 expected)')
  return readers[version](stream)

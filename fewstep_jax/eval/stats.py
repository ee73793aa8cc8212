"""Statistics of feature sets for the FID family of metrics, computed the way the reference evaluators do.

- `FeatureStats`: the mean and covariance of features streamed in batches, accumulated in float64 by Chan's
  pairwise update (batch mean and centred scatter merged into the running ones), so that no sum of squares of raw
  features is ever subtracted from another; `merge` combines the accumulators of several hosts. The covariance has
  the 1 / (N - 1) normalisation of `np.cov`, as pytorch-fid, clean-fid and the ADM / EDM evaluators use.
- `save_stats` / `load_stats`: the common `.npz` reference format, arrays `mu` [F] and `sigma` [F, F], so published
  reference statistics (EDM's `fid-refs/*.npz`, ADM's reference batches) are read as they are.
- `inception_score`: exp(E_x KL(p(y|x) || p(y))) over `splits` consecutive parts of the samples, the mean and
  standard deviation over the parts (Salimans et al. 2016, the improved-GAN `inception_score.py` formula).
The Frechet distance itself is `metrics.frechet_distance`.

- `feature_network` / `feature_statistics`: the statistics of a feature network's features of batches of images,
  whichever source yields them: a config's dataset (`dataset_statistics`) or image files (eval/sources.py).

`python -m fewstep_jax.eval.stats SOURCE --weights=WEIGHTS --out=FILE.npz [--features=inception|dinov2] [--num=N]`
writes the feature statistics of the images of SOURCE, one of
- `--config=CONFIG [--split=train]`: a config's dataset (every image of the split by default, as the published
  CIFAR-10 / ImageNet references use the whole training set), resized like its training data;
- `--images=DIR`: the image files in a folder and its subfolders, sorted, each converted to RGB, at any size;
- `--samples=FILE.npz`: an array of samples (arr_0 as ADM's sample batches store them, uint8 [N, H, W, 3], or this
  project's floats in [-1, 1]),
each then preprocessed exactly as the evaluator preprocesses samples (eval/sources.py says how, and why a folder
of the evaluator's own samples gives the evaluator's statistics). FID reads the file through
--config.eval.reference_stats=FILE.npz, FD-DINOv2 through --config.eval.dinov2_reference_stats, and
`python -m fewstep_jax.eval.fid` as either of its two sets. User errors end the command with one line.
"""
import dataclasses
import os
from typing import Callable

import numpy as np

from fewstep_jax.eval import sources
from fewstep_jax.train import files


class FeatureStats:
  """Running mean and covariance of features [B, F] added with `update`."""

  def __init__(self, dim: int | None = None):
    self.count = 0
    self.mean = None if dim is None else np.zeros(dim, np.float64)
    self.scatter = None if dim is None else np.zeros((dim, dim), np.float64)  # sum (x - mean)(x - mean)^T

  def update(self, features) -> 'FeatureStats':
    features = np.asarray(features, np.float64)
    if features.ndim != 2:
      raise ValueError(f'features must be [batch, dim]; got shape {features.shape}')
    if len(features) == 0:
      return self
    batch_mean = features.mean(axis=0)
    centred = features - batch_mean
    return self._merge(len(features), batch_mean, centred.T @ centred)

  def merge(self, other: 'FeatureStats') -> 'FeatureStats':
    """Adds another accumulator's features (another host's share) to this one."""
    if other.count == 0:
      return self
    return self._merge(other.count, other.mean, other.scatter)

  def _merge(self, count, mean, scatter) -> 'FeatureStats':
    if self.mean is None:
      self.mean, self.scatter = np.zeros_like(mean), np.zeros_like(scatter)
    if mean.shape != self.mean.shape:
      raise ValueError(f'features of dimension {mean.shape[0]} added to statistics of dimension {self.mean.shape[0]}')
    total = self.count + count
    delta = mean - self.mean
    self.scatter = self.scatter + scatter + np.outer(delta, delta) * (self.count * count / total)
    self.mean = self.mean + delta * (count / total)
    self.count = total
    return self

  def mu_sigma(self):
    """(mean [F], covariance [F, F]) in float64."""
    if self.count < 2:
      raise ValueError(f'a covariance needs at least 2 feature vectors; {self.count} were added')
    return self.mean.copy(), self.scatter / (self.count - 1)


def save_stats(path: str, mu, sigma):
  """Writes {'mu', 'sigma'} to the .npz file `path` (atomically: a partial file never replaces a good one)."""
  mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
  _check(path, mu, sigma)
  files.write_npz(path, {'mu': mu, 'sigma': sigma})


def load_stats(path: str):
  """(mu [F], sigma [F, F]) float64 from a reference-statistics .npz; clear errors for a missing or foreign file."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'no reference statistics at {path}: give the path of an .npz with arrays mu and sigma '
                            "(published ones, e.g. EDM's fid-refs, or ones written by save_stats)")
  with np.load(path) as stored:
    missing = [key for key in ('mu', 'sigma') if key not in stored.files]
    if missing:
      raise ValueError(f'{path} holds arrays {sorted(stored.files)}, not the reference statistics mu and sigma')
    mu, sigma = stored['mu'].astype(np.float64), stored['sigma'].astype(np.float64)
  _check(path, mu, sigma)
  return mu, sigma


def _check(path, mu, sigma):
  if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
    raise ValueError(f'{path}: mu must be [F] and sigma [F, F]; got {mu.shape} and {sigma.shape}')


def inception_score(logits, splits: int = 10):
  """(mean, std) of exp(E_x KL(p(y|x) || p(y))) over `splits` consecutive parts of logits [N, C] (p(y|x) = softmax,
  p(y) the part's mean), in float64."""
  logits = np.asarray(logits, np.float64)
  if logits.ndim != 2 or len(logits) < splits:
    raise ValueError(f'logits must be [N, classes] with N >= splits = {splits}; got shape {logits.shape}')
  log_p = logits - logits.max(axis=1, keepdims=True)
  log_p = log_p - np.log(np.exp(log_p).sum(axis=1, keepdims=True))
  n = len(logits)
  scores = []
  for k in range(splits):
    part = log_p[k * n // splits:(k + 1) * n // splits]
    log_marginal = np.log(np.exp(part).mean(axis=0))
    kl = np.sum(np.exp(part) * (part - log_marginal), axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


@dataclasses.dataclass(frozen=True)
class FeatureNetwork:
  """A feature network of features.EXTRACTORS on a mesh of every device: extract(images [B, H, W, C] in [-1, 1],
  B a multiple of the device count) -> (features [B, dim], logits or None)."""
  extract: Callable
  dim: int
  mesh: object


def feature_network(network: str, weights_path: str, resolution: int = 0) -> FeatureNetwork:
  """`network` (a key of features.EXTRACTORS) with the weights at `weights_path`, at input size `resolution` (0:
  the network's own, 299 / 224, as the published statistics use), on every device."""
  check_weights(weights_path)
  import types
  import jax
  from fewstep_jax.eval import features
  from fewstep_jax.train import sharding

  if network not in features.EXTRACTORS:
    raise ValueError(f'unknown feature network {network!r}; use one of {sorted(features.EXTRACTORS)}')
  mesh = sharding.make_mesh(types.SimpleNamespace(data=jax.device_count(), fsdp=1))
  extractor = features.EXTRACTORS[network]
  extract, dim = extractor(weights_path, mesh, resolution) if resolution else extractor(weights_path, mesh)
  return FeatureNetwork(extract, dim, mesh)


def feature_statistics(batches, network: FeatureNetwork, batch_size: int = 250, progress: Callable | None = None):
  """(mu, sigma, count): statistics of the network's features of the images that `batches(batch_size)` yields
  (float32 [b <= batch_size, H, W, C] in [-1, 1]; batch_size is first rounded up to a multiple of the device count).
  A batch is padded to the largest one yet of its image size, so that a network is compiled once per image size (a
  smaller last batch reuses it); the next batch is read while the device computes the last one. `progress(line)`
  (default writers.say) hears of the images done every 20 batches."""
  from fewstep_jax.train import sharding
  from fewstep_jax.train.writers import say

  progress = progress or say
  batch_size = sharding.device_multiple(batch_size, network.mesh)
  stats = FeatureStats(network.dim)
  padded_sizes = {}  # Image shape -> the batch size its network was compiled for.
  pending = None  # (features still on the device, rows that are images)
  for images in batches(batch_size):
    count = len(images)
    size = padded_sizes[images.shape[1:]] = max(padded_sizes.get(images.shape[1:], 0),
                                               sharding.device_multiple(count, network.mesh))
    padded = np.concatenate([images, np.zeros((size - count,) + images.shape[1:], images.dtype)])
    values, _ = network.extract(padded)
    if pending is not None:
      _add(stats, *pending, batch_size, progress)
    pending = values, count
  if pending is not None:
    _add(stats, *pending, batch_size, progress)
  mu, sigma = stats.mu_sigma()
  return mu, sigma, stats.count


def _add(stats, values, count, batch_size, progress):
  stats.update(np.asarray(values)[:count])
  if stats.count % (20 * batch_size) < count:
    progress(f'{stats.count} images')


def dataset_statistics(config, split: str, network: str, weights_path: str, limit: int = 0, batch_size: int = 250,
                       resolution: int = 0):
  """(mu, sigma, count): statistics of `network`'s features (a key of features.EXTRACTORS) of the images of
  config.data's `split`, on every local device; resolution 0 is the network's own (299 / 224)."""
  from fewstep_jax import data as data_lib

  pipeline = data_lib.build_data(config.data, global_batch_size=config.train.batch_size, seed=config.train.seed)
  if not hasattr(pipeline, 'split_images'):
    raise ValueError(f'data.name={config.data.name!r} holds no images to compute feature statistics of')
  return feature_statistics(lambda size: pipeline.split_images(split, size, limit),
                            feature_network(network, weights_path, resolution), batch_size)


# The stats command's flags for image files, and their readers.
SOURCES = {'images': sources.folder, 'samples': sources.sample_array}


def main(argv):
  del argv
  from absl import flags
  options = flags.FLAGS
  given = [name for name in ('config', 'images', 'samples') if options[name].value is not None]
  if len(given) != 1:
    raise ValueError(f'give one source of images, not {len(given)}: --config=CONFIG (its dataset), --images=DIR or '
                     '--samples=FILE.npz')
  if options.config is not None:
    mu, sigma, count = dataset_statistics(options.config, options.split, options.features, options.weights,
                                          options.num, options.batch, options.resolution)
    described = f'{count} images of {options.config.data.name} ({options.split})'
  else:
    images = SOURCES[given[0]](options[given[0]].value, options.num)
    print(f'reading {images.description}', flush=True)
    mu, sigma, _ = feature_statistics(images.batches, feature_network(options.features, options.weights,
                                                                      options.resolution), options.batch)
    described = images.description
  save_stats(options.out, mu, sigma)
  field = 'reference_stats' if options.features == 'inception' else f'{options.features}_reference_stats'
  print(f'{options.features} statistics of {described} written to {options.out}; use them with '
        f'--config.eval.{field}={options.out}', flush=True)


def check_weights(path: str | None):
  """A one-line error for --weights unset or naming no file (before minutes of reading images)."""
  if not path:
    raise ValueError('--weights=FILE is needed: the feature network\'s weights (pytorch-fid\'s '
                     'pt_inception-2015-12-05-6726825d.pth, dinov2_vitl14_pretrain.pth, or their .npz conversions)')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'--weights={path}: no such file; nothing is downloaded at run time (the Inception\'s '
                            'weights are pytorch-fid\'s pt_inception-2015-12-05-6726825d.pth)')


def define_network_flags():
  """The flags of the feature network, shared with eval.fid."""
  from absl import flags
  flags.DEFINE_enum('features', 'inception', ['inception', 'dinov2'], 'The feature network (FID or FD-DINOv2)')
  flags.DEFINE_string('weights', None, "The network's weights (.pth, .safetensors or converted .npz)")
  flags.DEFINE_integer('batch', 250, 'Images per network call')
  flags.DEFINE_integer('resolution', 0, "The network's input size; 0: its own (299 Inception, 224 DINOv2), as the "
                       'published statistics use')


def define_flags():
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file('config', None, 'An experiment config: its data.* fields name the dataset.')
  flags.DEFINE_string('images', None, 'A folder of image files (PNG, JPEG, ...; its subfolders too), instead of '
                      '--config')
  flags.DEFINE_string('samples', None, 'An .npz (arr_0) or .npy of samples [N, H, W, 3], uint8 0..255 or floats in '
                      '[-1, 1], instead of --config')
  define_network_flags()
  flags.DEFINE_string('out', None, 'The .npz to write (mu, sigma)')
  flags.DEFINE_string('split', 'train', 'The split (any TFDS split spec; with --config)')
  flags.DEFINE_integer('num', 0, 'Use the first NUM images (0: all)')
  flags.mark_flags_as_required(['out'])


if __name__ == '__main__':
  from fewstep_jax import cli
  define_flags()
  cli.run(main)

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

`python -m fewstep_jax.eval.stats --config=CONFIG --weights=WEIGHTS --out=FILE.npz [--features=inception|dinov2]
[--split=train] [--num=N]` writes the feature statistics of the images of a config's dataset (every image of the
split by default, as the published CIFAR-10 / ImageNet references use the whole training set), resized like its
training data, then as the metric resizes samples; FID reads them through --config.eval.reference_stats=FILE.npz,
FD-DINOv2 through --config.eval.dinov2_reference_stats.
"""
import os

import numpy as np

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


def dataset_statistics(config, split: str, network: str, weights_path: str, limit: int = 0, batch_size: int = 250,
                       resolution: int = 0):
  """(mu, sigma, count): statistics of `network`'s features (a key of features.EXTRACTORS) of the images of
  config.data's `split`, on every local device; resolution 0 is the network's own (299 / 224)."""
  import types
  import jax
  from fewstep_jax import data as data_lib
  from fewstep_jax.eval import features
  from fewstep_jax.train import sharding
  from fewstep_jax.train.writers import say

  if network not in features.EXTRACTORS:
    raise ValueError(f'unknown feature network {network!r}; use one of {sorted(features.EXTRACTORS)}')
  pipeline = data_lib.build_data(config.data, global_batch_size=config.train.batch_size, seed=config.train.seed)
  if not hasattr(pipeline, 'split_images'):
    raise ValueError(f'data.name={config.data.name!r} holds no images to compute feature statistics of')
  mesh = sharding.make_mesh(types.SimpleNamespace(data=jax.device_count(), fsdp=1))
  batch_size = sharding.device_multiple(batch_size, mesh)
  extractor = features.EXTRACTORS[network]
  extract, dim = extractor(weights_path, mesh, resolution) if resolution else extractor(weights_path, mesh)
  stats = FeatureStats(dim)
  for images in pipeline.split_images(split, batch_size, limit):
    count = len(images)
    padded = np.concatenate([images, np.zeros((batch_size - count,) + images.shape[1:], images.dtype)])
    values, _ = extract(padded)  # Padded to the one compiled batch size.
    stats.update(np.asarray(values)[:count])
    if stats.count % (20 * batch_size) < batch_size:
      say(f'{stats.count} images')
  mu, sigma = stats.mu_sigma()
  return mu, sigma, stats.count


def main(argv):
  del argv
  from absl import flags
  options = flags.FLAGS
  mu, sigma, count = dataset_statistics(options.config, options.split, options.features, options.weights,
                                        options.num, options.batch, options.resolution)
  save_stats(options.out, mu, sigma)
  field = 'reference_stats' if options.features == 'inception' else f'{options.features}_reference_stats'
  print(f'{options.features} statistics of {count} images of {options.config.data.name} ({options.split}) written '
        f'to {options.out}; use them with --config.eval.{field}={options.out}', flush=True)


def define_flags():
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file('config', None, 'An experiment config: its data.* fields name the dataset.')
  flags.DEFINE_enum('features', 'inception', ['inception', 'dinov2'], 'The feature network (FID or FD-DINOv2)')
  flags.DEFINE_string('weights', None, "The network's weights (.pth, .safetensors or converted .npz)")
  flags.DEFINE_string('out', None, 'The .npz to write (mu, sigma)')
  flags.DEFINE_string('split', 'train', 'The split (any TFDS split spec)')
  flags.DEFINE_integer('num', 0, 'Use the first NUM images of the split (0: all)')
  flags.DEFINE_integer('batch', 250, 'Images per network call')
  flags.DEFINE_integer('resolution', 0, "The network's input size; 0: its own (299 Inception, 224 DINOv2), as the "
                       'published statistics use')
  flags.mark_flags_as_required(['config', 'weights', 'out'])


if __name__ == '__main__':
  from fewstep_jax import cli
  define_flags()
  cli.run(main)

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
"""
import os

import numpy as np


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
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  temporary = os.path.join(directory, f'.{os.path.basename(path)}.tmp.npz')
  np.savez(temporary, mu=mu, sigma=sigma)
  os.replace(temporary, path)


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

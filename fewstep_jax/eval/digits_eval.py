"""Sample quality on the 8x8 digits: a Frechet distance in the shipped classifier's feature space, and accuracy.

The reference statistics are those of the TEST split. `floor(n)` is the Frechet distance of n train images'
features to them: what a generator that reproduces the data distribution (but not the test images themselves)
would roughly reach with n samples, so compare a generator's value with it.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from fewstep_jax.data.digits_arrays import load_digits_arrays, to_model_range
from fewstep_jax.eval import digits_classifier, metrics


class DigitsEvaluator:
  """Scores digits samples; images everywhere are [N, 8, 8, 1] floats in [-1, 1]."""

  def __init__(self, weights_path: str = digits_classifier.WEIGHTS_PATH):
    params = digits_classifier.load_params(weights_path)
    model = digits_classifier.DigitsClassifier()
    self._apply = jax.jit(lambda images: model.apply({'params': params}, images))

  def _logits_and_features(self, images):
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1:] != (8, 8, 1):
      raise ValueError(f'digits images must be [N, 8, 8, 1], got {images.shape}')
    # Clipped like images written to disk, so that out-of-range pixels are scored as the picture they make.
    logits, features = self._apply(jnp.clip(images, -1.0, 1.0))
    return np.asarray(logits), np.asarray(features)

  def features(self, images):
    """Penultimate-layer features [N, FEATURE_DIM] of images: [N, 8, 8, 1]."""
    return self._logits_and_features(images)[1]

  def predict(self, images):
    """Predicted labels int [N] of images: [N, 8, 8, 1]."""
    return np.argmax(self._logits_and_features(images)[0], axis=-1)

  @functools.cached_property
  def _test_stats(self):
    return metrics.gaussian_stats(self.features(to_model_range(load_digits_arrays('test')[0])))

  def frechet(self, samples) -> float:
    """Frechet distance between the features of samples: [N, 8, 8, 1] and those of the test split."""
    return metrics.frechet_distance(*metrics.gaussian_stats(self.features(samples)), *self._test_stats)

  def floor(self, num_samples: int | None = None, seed: int = 0) -> float:
    """Frechet distance of the train split to the test split: what a perfect generator reaches. The estimate's
    bias depends on the sample count, so pass the generator's: a seeded subset of that many train images
    (at most all 1437) is used; None uses the whole split."""
    images = to_model_range(load_digits_arrays('train')[0])
    if num_samples is not None and num_samples < len(images):
      images = images[np.random.default_rng(seed).permutation(len(images))[:num_samples]]
    return self.frechet(images)

  def class_accuracy(self, samples, labels) -> float:
    """Fraction of class-conditional samples: [N, 8, 8, 1] that the classifier assigns their labels: [N]."""
    return float(np.mean(self.predict(samples) == np.asarray(labels)))

"""Sample quality on the 8x8 digits: a Frechet distance in the shipped classifier's feature space, and accuracy;
for captioned digits (data/digits_text.py), how well samples follow their captions (`caption_scores`).

The reference statistics are those of the TEST split. `floor(n)` is the Frechet distance of n train images'
features to them: what a generator that reproduces the data distribution (but not the test images themselves)
would roughly reach with n samples, so compare a generator's value with it.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from fewstep_jax.data import digits_text
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


def caption_scores(evaluator: DigitsEvaluator, images, captions) -> dict:
  """How well images [N, 8, 8, 1] in [-1, 1] follow their captions (N digits_text.Captions): 'caption_accuracy', the
  share the classifier reads as the caption's digit, and 'attribute_agreement', the share of the attributes the
  captions name whose measured word on the image is the caption's."""
  return {'caption_accuracy': evaluator.class_accuracy(images, [caption.digit for caption in captions]),
          'attribute_agreement': digits_text.attribute_agreement(images, captions)}


def real_caption_scores(evaluator: DigitsEvaluator) -> dict:
  """caption_scores of the test images under their own captions (their labels and measured words, every full
  template): the references of the caption metrics. caption_accuracy is the classifier's test accuracy; attribute
  agreement is 1 by construction (a caption's words are measured on the image), the value of a generator that draws
  from p(image | caption)."""
  images, labels = digits_text.split_arrays('test')
  captions = [caption for template in digits_text.FULL_TEMPLATES
              for caption in digits_text.own_captions(images, labels, template)]
  return caption_scores(evaluator, np.concatenate([images] * len(digits_text.FULL_TEMPLATES)), captions)

"""A small CNN classifier of the 8x8 digits, whose penultimate layer is the feature space of the digits metrics.

It plays the role Inception plays for FID: trained once by experiments/train_digits_classifier.py, its weights ship
with the package at WEIGHTS_PATH.
"""
import os

import flax.linen as nn
import flax.serialization
import jax

WEIGHTS_PATH = os.path.join(os.path.dirname(__file__), 'weights', 'digits_classifier.msgpack')
TRAINING_SCRIPT = 'experiments/train_digits_classifier.py'
FEATURE_DIM = 64


class DigitsClassifier(nn.Module):
  """images: [N, 8, 8, 1] in [-1, 1] -> (logits [N, 10], features [N, FEATURE_DIM])."""
  feature_dim: int = FEATURE_DIM
  num_classes: int = 10

  @nn.compact
  def __call__(self, images):
    h = nn.relu(nn.Conv(16, (3, 3))(images))
    h = nn.relu(nn.Conv(32, (3, 3))(h))
    h = nn.avg_pool(h, (2, 2), strides=(2, 2))
    features = nn.relu(nn.Dense(self.feature_dim)(h.reshape(h.shape[0], -1)))
    return nn.Dense(self.num_classes)(features), features


def init_params(key):
  return DigitsClassifier().init(key, jax.numpy.zeros((1, 8, 8, 1)))['params']


def save_params(params, path: str = WEIGHTS_PATH):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(flax.serialization.msgpack_serialize(jax.device_get(params)))


def load_params(path: str = WEIGHTS_PATH):
  """The classifier's parameters saved at path; FileNotFoundError says how to make them if they are missing."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'digits classifier weights not found at {path}; train them with '
                            f'`python {TRAINING_SCRIPT}` from the repository root')
  with open(path, 'rb') as f:
    return flax.serialization.msgpack_restore(f.read())

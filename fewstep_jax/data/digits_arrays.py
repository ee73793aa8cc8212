"""The scikit-learn 8x8 digits as arrays, with the project's fixed train/test split.

Every consumer of the digits (the TFDS builder, the evaluation classifier, the Frechet-distance floor)
goes through this one function, so the split is defined in exactly one place.
"""
import numpy as np

NUM_CLASSES = 10
IMAGE_SHAPE = (8, 8, 1)
NUM_TEST = 360  # 20% of the 1797 images, fixed by a seeded permutation.
_SPLIT_SEED = 0


def load_digits_arrays(split: str):
  """Returns (images, labels) for split 'train' (1437 images) or 'test' (360 images).

  images: uint8 [N, 8, 8, 1] with values 0..16 rescaled to 0..255; labels: int32 [N].
  """
  from sklearn.datasets import load_digits  # Ships its data: no download.
  if split not in ('train', 'test'):
    raise ValueError(f"digits split must be 'train' or 'test', got {split!r}")
  bunch = load_digits()
  images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = bunch.target.astype(np.int32)
  order = np.random.RandomState(_SPLIT_SEED).permutation(len(labels))
  index = order[:NUM_TEST] if split == 'test' else order[NUM_TEST:]
  return images[index], labels[index]


def to_model_range(images_uint8):
  """uint8 [..., H, W, C] in 0..255 -> float32 in [-1, 1]."""
  return images_uint8.astype(np.float32) / 127.5 - 1.0

"""The feature networks of the Frechet metrics, as jitted functions of image batches on a device mesh:
`EXTRACTORS[name](weights_path, mesh, resolution) -> (fn(images [B, ...]) -> (features [B, F], logits or None), F)`.
Images are in [-1, 1]; the batch is split over the mesh's devices and the outputs are replicated, so every process
reads them. Each is compiled once per image shape."""
import jax
from jax.sharding import NamedSharding, PartitionSpec

from fewstep_jax.eval import dinov2, inception


def _replicated(mesh, tree):
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def inception_extractor(weights_path: str, mesh, resolution: int = inception.RESOLUTION):
  """FID Inception-v3: pool3 features (2048) and the 1008 logits of the Inception Score."""
  weights = _replicated(mesh, inception.load_weights(weights_path))
  fn = inception.sharded_features(mesh, resolution)
  return (lambda images: fn(weights, images)), inception.FEATURE_DIM


def dinov2_extractor(weights_path: str, mesh, resolution: int = dinov2.RESOLUTION):
  """DINOv2 ViT: the normalised class token (1024 for ViT-L/14); no logits."""
  vit, weights = dinov2.load_weights(weights_path, resolution)
  weights = _replicated(mesh, weights)
  fn = dinov2.sharded_features(vit, mesh, resolution)
  return (lambda images: (fn(weights, images), None)), vit.dim


EXTRACTORS = {'inception': inception_extractor, 'dinov2': dinov2_extractor}

"""The feature networks of the Frechet metrics, as jitted functions of image batches on a device mesh:
`EXTRACTORS[name](weights_path, mesh, resolution) -> (fn(images [B, ...]) -> (features [B, F], logits or None), F)`.
Images are in [-1, 1]; the batch is split over the mesh's devices and the outputs are replicated, so every process
reads them. Each network is compiled once per (mesh, resolution, image shape), whichever evaluator asks for it.
"""
import functools

import jax
from jax.sharding import NamedSharding, PartitionSpec

from fewstep_jax.eval import dinov2, inception
from fewstep_jax.mesh_axes import BATCH_AXES


def inception_outputs(weights, images, resolution: int):
  return inception.features_and_logits(weights, images, resolution)


def dinov2_outputs(weights, images, resolution: int, vit: dinov2.ViT):
  return dinov2.features(vit, weights, images, resolution), None


@functools.lru_cache(maxsize=16)
def sharded(outputs, mesh, *options):
  """jit(weights, images) -> outputs(weights, images, *options) (a module-level function above: (features,
  logits or None)), the batch split over `mesh`, the output replicated."""
  def apply(weights, images):
    images = jax.lax.with_sharding_constraint(images, NamedSharding(mesh, PartitionSpec(BATCH_AXES)))
    return outputs(weights, images, *options)
  return jax.jit(apply, out_shardings=NamedSharding(mesh, PartitionSpec()))


def _replicated(mesh, tree):
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def inception_extractor(weights_path: str, mesh, resolution: int = inception.RESOLUTION):
  """FID Inception-v3: pool3 features (2048) and the 1008 logits of the Inception Score."""
  weights = _replicated(mesh, inception.load_weights(weights_path))
  fn = sharded(inception_outputs, mesh, resolution)
  return (lambda images: fn(weights, images)), inception.FEATURE_DIM


def dinov2_extractor(weights_path: str, mesh, resolution: int = dinov2.RESOLUTION):
  """DINOv2 ViT: the normalised class token (1024 for ViT-L/14); no logits."""
  vit, weights = dinov2.load_weights(weights_path, resolution)
  fn = sharded(dinov2_outputs, mesh, resolution, vit)
  weights = _replicated(mesh, weights)
  return (lambda images: fn(weights, images)), vit.dim


EXTRACTORS = {'inception': inception_extractor, 'dinov2': dinov2_extractor}

"""Per-sample distances d(a, b) -> [B] between batches of samples [B, ...], for the consistency losses.

  'l2'            mean over the D data dimensions of (a - b)^2 (CM's squared L2, at the scale of a per-element MSE)
  'pseudo_huber'  sqrt(||a - b||^2 + c^2) - c over the whole sample (iCT; c = 0 is ECT's un-squared L2 norm);
                  c < 0 selects iCT's c = 0.00054 sqrt(D)
  'lpips'         LPIPS (VGG16 features, learned channel weights) from a local weights file (`nn/lpips.py`);
                  images only

`make_distance(name, data_shape, huber_c=..., lpips_weights=...)` checks the arguments once, when the method is
built, and returns a `Distance`: a jittable fn(a, b, params) -> [B] and `load() -> params`, what fn needs (the
LPIPS network's weights), or None when it needs nothing. Methods declare the load as an input (inputs.ArraysInput):
the weights are read on the host when the run starts and enter the step as sharded arrays, not as constants.

Also here, the reductions and weights the losses share: `per_sample_mean`, `elementwise_pseudo_huber`, `edm_weight`.
"""
import math
from typing import Callable, NamedTuple

import jax.numpy as jnp

ICT_HUBER_C_PER_SQRT_DIM = 0.00054


def _flat(x):
  return x.reshape(x.shape[0], -1)


def per_sample_mean(x):
  """Mean over every axis but the first: [B, ...] -> [B]."""
  return jnp.mean(_flat(x), axis=1)


def edm_weight(sigma, sigma_data):
  """EDM's loss weight lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2 [B]."""
  return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def elementwise_pseudo_huber(difference, c: float):
  """sqrt(d^2 + c^2) - c of every element of `difference` (TDM's per-element distance)."""
  return jnp.sqrt(jnp.square(difference) + c * c) - c


def squared_l2(a, b):
  return jnp.mean(jnp.square(_flat(a) - _flat(b)), axis=1)


def pseudo_huber(a, b, c: float):
  squared = jnp.sum(jnp.square(_flat(a) - _flat(b)), axis=1)
  # At a == b with c = 0 the square root has an infinite derivative (0 * inf = NaN in the gradient); the floor
  # makes that gradient 0 and moves the value by at most 1e-15.
  return jnp.sqrt(jnp.maximum(squared + c * c, 1e-30)) - c


class Distance(NamedTuple):
  fn: Callable           # (a [B, ...], b [B, ...], params) -> [B]
  load: Callable | None  # () -> params, or None when fn needs none


def _make_l2(data_shape, **unused):
  del data_shape, unused
  return Distance(lambda a, b, params: squared_l2(a, b), None)


def _make_pseudo_huber(data_shape, *, huber_c: float, **unused):
  del unused
  c = ICT_HUBER_C_PER_SQRT_DIM * math.sqrt(math.prod(data_shape)) if huber_c < 0 else float(huber_c)
  return Distance(lambda a, b, params: pseudo_huber(a, b, c), None)


def _make_lpips(data_shape, *, lpips_weights: str, lpips_resolution: int, **unused):
  del unused
  from fewstep_jax.nn import lpips  # Late import: only LPIPS runs need the VGG network.
  return Distance(lpips.make_lpips(data_shape, resolution=lpips_resolution),
                  weights_loader('lpips', lpips_weights=lpips_weights))


DISTANCES = {'l2': _make_l2, 'pseudo_huber': _make_pseudo_huber, 'lpips': _make_lpips}


def weights_loader(name: str, *, lpips_weights: str = ''):
  """() -> the weights distance `name` reads from a file (LPIPS), for the run's inputs; None when it reads none."""
  if name not in DISTANCES:
    raise ValueError(f'unknown distance {name!r}; use one of {sorted(DISTANCES)}')
  if name != 'lpips':
    return None
  from fewstep_jax.nn import lpips  # Late import: only LPIPS runs need the VGG network.
  return lambda: lpips.load_weights(lpips_weights)


def make_distance(name: str, data_shape: tuple, *, huber_c: float = -1.0, lpips_weights: str = '',
                  lpips_resolution: int = 224) -> Distance:
  """The distance `name` for samples of per-example shape data_shape (a [B, ...], b [B, ...] -> [B])."""
  if name not in DISTANCES:
    raise ValueError(f'unknown distance {name!r}; use one of {sorted(DISTANCES)}')
  return DISTANCES[name](tuple(data_shape), huber_c=huber_c, lpips_weights=lpips_weights,
                         lpips_resolution=lpips_resolution)

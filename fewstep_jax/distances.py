"""Per-sample distances d(a, b) -> [B] between batches of samples [B, ...], for the consistency losses.

  'l2'            mean over the D data dimensions of (a - b)^2 (CM's squared L2, at the scale of a per-element MSE)
  'pseudo_huber'  sqrt(||a - b||^2 + c^2) - c over the whole sample (iCT; c = 0 is ECT's un-squared L2 norm);
                  c < 0 selects iCT's c = 0.00054 sqrt(D)
  'lpips'         LPIPS (VGG16 features, learned channel weights) from a local weights file (`nn/lpips.py`);
                  images only

`make_distance(name, data_shape, huber_c=..., lpips_weights=...)` checks the arguments once, when the method is
built, and returns a `Distance`: a jittable fn(a, b, params) -> [B] and `load() -> params`, what fn needs (the
LPIPS network's weights, read on the host when the run starts; {} otherwise). Methods keep the params with their
frozen parameters, so that they enter the step as sharded arrays rather than as constants compiled into it.
"""
from typing import Callable, NamedTuple

import math

import jax.numpy as jnp

ICT_HUBER_C_PER_SQRT_DIM = 0.00054


def _flat(x):
  return x.reshape(x.shape[0], -1)


def squared_l2(a, b):
  return jnp.mean(jnp.square(_flat(a) - _flat(b)), axis=1)


def pseudo_huber(a, b, c: float):
  squared = jnp.sum(jnp.square(_flat(a) - _flat(b)), axis=1)
  # At a == b with c = 0 the square root has an infinite derivative (0 * inf = NaN in the gradient); the floor
  # makes that gradient 0 and moves the value by at most 1e-15.
  return jnp.sqrt(jnp.maximum(squared + c * c, 1e-30)) - c


class Distance(NamedTuple):
  fn: Callable    # (a [B, ...], b [B, ...], params) -> [B]
  load: Callable  # () -> params


def _make_l2(data_shape, **unused):
  del data_shape, unused
  return Distance(lambda a, b, params: squared_l2(a, b), dict)


def _make_pseudo_huber(data_shape, *, huber_c: float, **unused):
  del unused
  c = ICT_HUBER_C_PER_SQRT_DIM * math.sqrt(math.prod(data_shape)) if huber_c < 0 else float(huber_c)
  return Distance(lambda a, b, params: pseudo_huber(a, b, c), dict)


def _make_lpips(data_shape, *, lpips_weights: str, lpips_resolution: int, **unused):
  del unused
  from fewstep_jax.nn import lpips  # Late import: only LPIPS runs need the VGG network.
  return Distance(lpips.make_lpips(data_shape, resolution=lpips_resolution),
                  lambda: lpips.load_weights(lpips_weights))


DISTANCES = {'l2': _make_l2, 'pseudo_huber': _make_pseudo_huber, 'lpips': _make_lpips}


def make_distance(name: str, data_shape: tuple, *, huber_c: float = -1.0, lpips_weights: str = '',
                  lpips_resolution: int = 224) -> Distance:
  """The distance `name` for samples of per-example shape data_shape (a [B, ...], b [B, ...] -> [B])."""
  if name not in DISTANCES:
    raise ValueError(f'unknown distance {name!r}; use one of {sorted(DISTANCES)}')
  return DISTANCES[name](tuple(data_shape), huber_c=huber_c, lpips_weights=lpips_weights,
                         lpips_resolution=lpips_resolution)

"""Stored sampler grids of the ODE samplers (made by `python -m fewstep_jax.tools.search_sampler_grids`): how a grid
maps onto a method's default solver grid, and reading the stored file for the sampler (`eval.grid_file`).

A grid's points are fractions of the way along the method's default map (EDM: the Karras rho-map; flow matching:
time), written as a softmax of interval logits (all zeros: the default grid). The method says how many of a
K-step grid's points lie on that map (`grid_points`) and turns fractions into a grid (`grid_from_fractions`).
"""
import os

import numpy as np

from fewstep_jax.errors import ConfigError, InputNotFoundError, RunError
from fewstep_jax.train import files


def fractions_from_logits(logits):
  """Increasing fractions [len + 1] from 0 to 1: the cumulative softmax of the interval logits."""
  increments = np.exp(logits - np.max(logits))
  fractions = np.concatenate([[0.0], np.cumsum(increments / increments.sum())])
  fractions[-1] = 1.0  # Exactly the grid's end (the cumulative sum may round below it).
  return fractions


def _intervals(method, solver: str, nfe: int) -> int:
  if not method.ode_solvers:
    raise ConfigError(f'sampler grids are made for ODE samplers, not {method.name!r}\'s few-step sampler')
  # The steps of the method's default grid for this budget (as its sampler plans them, guided where it samples so).
  num_steps = int(method.sampling_plan(nfe, method.conditioning.conditional, solver=solver).steps.num_steps)
  return max(method.grid_points(num_steps) - 1, 0)


def grid_size(method, solver: str, nfe: int) -> int:
  """The number of interval logits of `method`'s grid for `nfe` calls with `solver`; 0 where fewer than two
  intervals leave no interior point to move."""
  intervals = _intervals(method, solver, nfe)
  return intervals if intervals >= 2 else 0


def logit_grid(method, solver: str, nfe: int, logits=None):
  """The grid of `method`'s sampler for `nfe` calls with `solver`, from interval logits (None or empty: the
  default grid, equal fractions)."""
  intervals = _intervals(method, solver, nfe)
  logits = np.zeros(intervals) if logits is None or len(logits) == 0 else np.asarray(logits, np.float64)
  fractions = fractions_from_logits(logits) if intervals else np.zeros(1)
  return method.grid_from_fractions(fractions)


def grid_for(path: str, method_name: str, solver: str, nfe: int):
  """The stored grid for `nfe` (a tuple of floats), or None where the file holds none for that NFE; clear errors
  for a missing or damaged file and for one made for another method or solver."""
  if not os.path.exists(path):
    raise InputNotFoundError(f'eval.grid_file={path!r} does not exist: make it with python -m '
                             'fewstep_jax.tools.search_sampler_grids')
  stored = files.read_json(path)
  if isinstance(stored, dict) and 'schedules' in stored:  # The key of files written before grids were so named.
    stored['grids'] = stored.pop('schedules')
  if not isinstance(stored, dict) or 'grids' not in stored:
    raise RunError(f'{path} is not a sampler-grid file (no "grids"): make it with python -m '
                   'fewstep_jax.tools.search_sampler_grids')
  if (stored.get('method'), stored.get('solver')) != (method_name, solver):
    raise ConfigError(f'{path} holds grids for a {stored.get("method")!r} sampler with the '
                      f'{stored.get("solver")!r} solver; this run samples {method_name!r} with {solver!r}')
  entry = stored['grids'].get(str(nfe))
  return None if entry is None else tuple(float(v) for v in entry['grid'])

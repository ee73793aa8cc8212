"""Stored few-step schedules of the ODE teachers (made by `python -m fewstep_jax.schedules`): how a schedule maps
onto each teacher's solver grid, and reading the stored file for the sampler (`eval.schedule`).

A schedule's interior points are fractions of the way along the teacher's default map (EDM: the Karras rho-map;
flow matching: time), written as a softmax of interval logits (all zeros: the default grid).
"""
import os

import numpy as np

from fewstep_jax import timesteps
from fewstep_jax.errors import ConfigError, InputNotFoundError, RunError
from fewstep_jax.train import files


def _edm_grid(hp, fractions):
  return np.concatenate([timesteps.karras_map(1.0 - fractions, hp.sigma_min, hp.sigma_max, hp.rho), [0.0]])


# By teacher method: (points of a num_steps-step grid that the fractions span, fractions [points] -> grid).
SCHEDULE_MAPS = {
    'edm': (lambda num_steps: num_steps, _edm_grid),
    'flow_matching': (lambda num_steps: num_steps + 1, lambda hp, fractions: 1.0 - fractions),
}


def fractions_from_logits(logits):
  """Increasing fractions [len + 1] from 0 to 1: the cumulative softmax of the interval logits."""
  increments = np.exp(logits - np.max(logits))
  fractions = np.concatenate([[0.0], np.cumsum(increments / increments.sum())])
  fractions[-1] = 1.0  # Exactly the grid's end (the cumulative sum may round below it).
  return fractions


def _intervals(method, solver: str, nfe: int) -> int:
  if method.name not in SCHEDULE_MAPS:
    raise ConfigError(f'schedules are made for ODE teachers ({sorted(SCHEDULE_MAPS)}), not {method.name!r}')
  points, _ = SCHEDULE_MAPS[method.name]
  # The steps of the method's default grid for this budget (as its sampler plans them, guided where it samples so).
  num_steps = int(method.sampling_plan(nfe, method.num_classes > 0, solver=solver).num_steps)
  return max(points(num_steps) - 1, 0)


def schedule_size(method, solver: str, nfe: int) -> int:
  """The number of interval logits of `method`'s grid for `nfe` calls with `solver`; 0 where fewer than two
  intervals leave no interior point to move (e.g. EDM's 3-call Heun grid sigma_max, sigma_min, 0)."""
  intervals = _intervals(method, solver, nfe)
  return intervals if intervals >= 2 else 0


def schedule_grid(method, solver: str, nfe: int, logits=None):
  """The grid of `method`'s sampler for `nfe` calls with `solver`, from interval logits (None or empty: the
  default grid, equal fractions)."""
  intervals = _intervals(method, solver, nfe)
  logits = np.zeros(intervals) if logits is None or len(logits) == 0 else np.asarray(logits, np.float64)
  fractions = fractions_from_logits(logits) if intervals else np.zeros(1)
  return SCHEDULE_MAPS[method.name][1](method.hparams, fractions)


def grid_for(path: str, method_name: str, solver: str, nfe: int):
  """The stored grid for `nfe` (a tuple of floats), or None where the file holds none for that NFE; clear errors
  for a missing or damaged file and for one made for another method or solver."""
  if not os.path.exists(path):
    raise InputNotFoundError(f'eval.schedule={path!r} does not exist: make it with python -m fewstep_jax.schedules')
  stored = files.read_json(path)
  if not isinstance(stored, dict) or 'schedules' not in stored:
    raise RunError(f'{path} is not a schedule file (no "schedules"): make it with python -m fewstep_jax.schedules')
  if (stored.get('method'), stored.get('solver')) != (method_name, solver):
    raise ConfigError(f'{path} holds schedules for a {stored.get("method")!r} teacher with the '
                      f'{stored.get("solver")!r} solver; this run samples {method_name!r} with {solver!r}')
  entry = stored['schedules'].get(str(nfe))
  return None if entry is None else tuple(float(v) for v in entry['grid'])



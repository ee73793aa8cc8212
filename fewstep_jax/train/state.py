"""Training-state pytrees (docs/methods.md).

Everything a run needs to continue lives in these pytrees, so a checkpoint of a TrainState (plus the data
iterator's state) is a complete snapshot, and a step is a pure function of it.
"""
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from fewstep_jax.train import offload

PyTree = Any


@flax.struct.dataclass
class NetState:
  """One trained network: its parameters, optimizer state and EMA copies.

  ema: dict from an EMA name (see `ema_name`) to a parameter copy with the structure of `params`.
  """
  params: PyTree
  opt_state: PyTree
  ema: dict


@flax.struct.dataclass
class TrainState:
  """step: int32 scalar; nets: name -> NetState (trained); frozen: name -> params (e.g. a teacher);
  extra: small method-specific arrays (e.g. a curriculum stage)."""
  step: jnp.ndarray
  nets: dict
  frozen: dict
  extra: dict


def ema_name(rate: float) -> str:
  """'ema_0.9999' for rate 0.9999: the key of an EMA copy in NetState.ema and in configs."""
  return f'ema_{rate:g}'


def ema_rate(name: str) -> float | None:
  """The rate of the EMA copy `name` ('ema_0.9999' -> 0.9999); None for names that are not EMA copies."""
  return float(name[len('ema_'):]) if name.startswith('ema_') else None


def power_ema_name(std: float) -> str:
  """'phema_0.05' for sigma_rel 0.05: the key of a power-function EMA copy (EDM2's) in NetState.ema and in configs."""
  return f'phema_{std:g}'


def power_ema_exponent(std: float) -> float:
  """EDM2's power-function exponent gamma of relative width sigma_rel = std (its Eq. 126 and Algorithm 2): the
  largest real root of sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)), a cubic in gamma."""
  inv = 1.0 / float(std) ** 2
  roots = np.roots([1.0, 7.0, 16.0 - inv, 12.0 - inv])
  return float(max(root.real for root in roots if abs(root.imag) < 1e-9))


def power_ema_rate(std: float, count):
  """beta_n = (1 - 1/n)^(gamma + 1) for the n-th update (count = n - 1 updates before it, traced): EDM2's
  `power_function_beta` with t_next = n batches and t_delta = one batch. beta_1 = 0: the first update copies."""
  n = jnp.asarray(count, jnp.float32) + 1.0
  return (1.0 - 1.0 / n) ** (power_ema_exponent(std) + 1.0)


def ema_names(ema_rates=(), ema_stds=()) -> list:
  """The names of the EMA copies a network keeps: fixed-rate ones, then power-function ones."""
  return [ema_name(rate) for rate in ema_rates] + [power_ema_name(std) for std in ema_stds]


def init_net_state(params, tx, ema_rates, ema_stds=()) -> NetState:
  """A fresh NetState: optimizer initialised, every EMA copy equal to the initial parameters.

  EMA copies are float32 whatever the parameters' dtype: a (1 - rate) = 1e-4 increment is below bfloat16's
  resolution, so a bfloat16 average would never move.
  """
  as_float32 = jax.tree.map(lambda p: p.astype(jnp.float32), params)
  return NetState(params=params, opt_state=tx.init(params),
                  ema={name: as_float32 for name in ema_names(ema_rates, ema_stds)})


def update_ema(ema: dict, params, ema_rates, ema_stds=(), count=None) -> dict:
  """ema <- rate * ema + (1 - rate) * params for each configured rate, and for each power-function width std at
  rate power_ema_rate(std, count) (count: the updates before this one), in the EMA's float32. EMA copies kept in
  host memory (mesh.offload='ema') are averaged there."""
  if ema_stds and count is None:
    raise ValueError('a power-function EMA (optim.ema_stds) needs the update count')
  rates = {ema_name(rate): (rate, 1.0 - rate) for rate in ema_rates}
  for std in ema_stds:
    rate = power_ema_rate(std, count)
    rates[power_ema_name(std)] = (rate, 1.0 - rate)
  if any(offload.in_host_memory(leaf) for leaf in jax.tree.leaves(ema)):
    return offload.average_on_host(_average, ema, params, rates)
  return _average(ema, params, rates)


def _average(ema: dict, params, rates: dict) -> dict:
  return {name: jax.tree.map(lambda e, p, r=rate, s=rest: r * e + s * p.astype(e.dtype), ema[name], params)
          for name, (rate, rest) in rates.items()}


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))

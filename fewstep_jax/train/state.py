"""Training-state pytrees (README, "Concepts").

Everything a run needs to continue lives in these pytrees, so a checkpoint of a TrainState (plus the data
iterator's state) is a complete snapshot, and a step is a pure function of it.
"""
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

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


def init_net_state(params, tx, ema_rates) -> NetState:
  """A fresh NetState: optimizer initialised, every EMA copy equal to the initial parameters.

  EMA copies are float32 whatever the parameters' dtype: a (1 - rate) = 1e-4 increment is below bfloat16's
  resolution, so a bfloat16 average would never move.
  """
  as_float32 = jax.tree.map(lambda p: p.astype(jnp.float32), params)
  return NetState(params=params, opt_state=tx.init(params),
                  ema={ema_name(rate): as_float32 for rate in ema_rates})


def update_ema(ema: dict, params, ema_rates) -> dict:
  """ema <- rate * ema + (1 - rate) * params for each configured rate (in the EMA's float32)."""
  new = {}
  for rate in ema_rates:
    name = ema_name(rate)
    new[name] = jax.tree.map(lambda e, p, r=rate: r * e + (1.0 - r) * p.astype(e.dtype), ema[name], params)
  return new


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))

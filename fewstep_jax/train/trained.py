"""One trained network: its module, optimizer and EMA rates, with the two operations every method applies to it.

The single-network methods train one (the student); score distillation trains three (student, critic, GAN head).
"""
import jax
import jax.numpy as jnp
import optax

from fewstep_jax import nn
from fewstep_jax.nn import lora as lora_lib
from fewstep_jax.train import state as state_lib
from fewstep_jax.train.optim import make_optimizer


class TrainedNetwork:
  """module: a flax module; tx: its optax optimizer; ema_rates: the rates of its EMA copies (none for networks
  that are never sampled from); ema_stds: the widths sigma_rel of its power-function EMA copies (EDM2's);
  param_dtype: the dtype its parameters are kept in; count_offset: the updates of an earlier run its counters
  continue from (the power-function EMA's; `tx`'s schedule must be built with the same offset)."""

  def __init__(self, module, tx, ema_rates=(), param_dtype=jnp.float32, ema_stds=(), count_offset: int = 0):
    self.module = module
    self.tx = tx
    self.ema_rates = tuple(ema_rates)
    self.ema_stds = tuple(ema_stds)
    self.param_dtype = param_dtype
    self.count_offset = int(count_offset)
    self.trains_adapters = False  # LoRA (nn/lora.py): the parameters are factors, which no projection applies to.

  @classmethod
  def from_config(cls, config, *, num_classes: int, num_updates: int | None = None,
                  count_offset: int = 0) -> 'TrainedNetwork':
    """The network config.network with the optimizer config.optim over `num_updates` updates (default
    train.num_steps), EMA rates optim.ema_rates and train's dtypes: a run's student. count_offset: the updates its
    learning-rate schedule and power-function EMA continue from."""
    module = nn.build_network(config.network, num_classes=num_classes,
                              dtype=nn.dtype_named(config.train.compute_dtype))
    updates = config.train.num_steps if num_updates is None else num_updates
    return cls(module, make_optimizer(config.optim, updates, count_offset), config.optim.ema_rates,
               nn.dtype_named(config.train.param_dtype), config.optim.get('ema_stds', ()), count_offset)

  @property
  def apply(self):
    """apply(params, x, t, r=None, y=None, key=None): the raw network (nn.make_apply)."""
    return nn.make_apply(self.module)

  def init_params(self, key, data_shape: tuple):
    """Fresh parameters of the network for examples of shape data_shape."""
    return nn.init_params(self.module, key, jnp.zeros((1,) + tuple(data_shape), jnp.float32))

  def project(self, params):
    """The network's constraint on its parameters (`nn.param_projection`; EDM2's forced weight normalisation), or
    params unchanged."""
    projection = None if self.trains_adapters else nn.param_projection(self.module)
    return params if projection is None else projection(params)

  def init(self, params) -> state_lib.NetState:
    """A NetState starting at `params` (cast to param_dtype, then projected): optimizer initialised, EMA copies
    equal to them."""
    params = self.project(jax.tree.map(lambda p: p.astype(self.param_dtype), params))
    return state_lib.init_net_state(params, self.tx, self.ema_rates, self.ema_stds)

  def init_adapters(self, lora, base, key) -> state_lib.NetState:
    """A NetState of fresh LoRA factors over `base` (nn/lora.py): optimizer initialised, EMA copies equal to them."""
    self.trains_adapters = True
    return state_lib.init_net_state(lora_lib.init(lora, base, key), self.tx, self.ema_rates, self.ema_stds)

  def apply_gradients(self, net: state_lib.NetState, grads, count=None) -> state_lib.NetState:
    """One optimizer step on `grads`, the EMA update, then the projection. count: this network's updates before
    this one (traced), which the power-function EMA's rate depends on. The EMA copies average the updated
    parameters before the projection, as EDM2's average its weights before the next forward pass normalises them."""
    updates, opt_state = self.tx.update(grads, net.opt_state, net.params)
    params = optax.apply_updates(net.params, updates)
    if count is not None:
      count = count + self.count_offset
    return state_lib.NetState(params=self.project(params), opt_state=opt_state,
                              ema=state_lib.update_ema(net.ema, params, self.ema_rates, self.ema_stds, count))

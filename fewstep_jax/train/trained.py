"""One trained network: its module, optimizer and EMA rates, with the two operations every method applies to it.

The single-network methods train one (the student); score distillation trains three (student, critic, GAN head).
"""
import jax
import jax.numpy as jnp
import optax

from fewstep_jax import nn
from fewstep_jax.train import state as state_lib
from fewstep_jax.train.optim import make_optimizer


class TrainedNetwork:
  """module: a flax module; tx: its optax optimizer; ema_rates: the rates of its EMA copies (none for networks
  that are never sampled from); param_dtype: the dtype its parameters are kept in."""

  def __init__(self, module, tx, ema_rates=(), param_dtype=jnp.float32):
    self.module = module
    self.tx = tx
    self.ema_rates = tuple(ema_rates)
    self.param_dtype = param_dtype

  @classmethod
  def from_config(cls, config, *, num_classes: int, num_updates: int | None = None) -> 'TrainedNetwork':
    """The network config.network with the optimizer config.optim over `num_updates` updates (default
    train.num_steps), EMA rates optim.ema_rates and train's dtypes: a run's student."""
    module = nn.build_network(config.network, num_classes=num_classes,
                              dtype=nn.dtype_named(config.train.compute_dtype))
    updates = config.train.num_steps if num_updates is None else num_updates
    return cls(module, make_optimizer(config.optim, updates), config.optim.ema_rates,
               nn.dtype_named(config.train.param_dtype))

  @property
  def apply(self):
    """apply(params, x, t, r=None, y=None, key=None): the raw network (nn.make_apply)."""
    return nn.make_apply(self.module)

  def init_params(self, key, data_shape: tuple):
    """Fresh parameters of the network for examples of shape data_shape."""
    return nn.init_params(self.module, key, jnp.zeros((1,) + tuple(data_shape), jnp.float32))

  def init(self, params) -> state_lib.NetState:
    """A NetState starting at `params` (cast to param_dtype): optimizer initialised, EMA copies equal to them."""
    params = jax.tree.map(lambda p: p.astype(self.param_dtype), params)
    return state_lib.init_net_state(params, self.tx, self.ema_rates)

  def apply_gradients(self, net: state_lib.NetState, grads) -> state_lib.NetState:
    """One optimizer step on `grads`, then the EMA update."""
    updates, opt_state = self.tx.update(grads, net.opt_state, net.params)
    params = optax.apply_updates(net.params, updates)
    return state_lib.NetState(params=params, opt_state=opt_state,
                              ema=state_lib.update_ema(net.ema, params, self.ema_rates))

"""method.frozen_dtype: frozen networks (teachers, stage-1 models) stored in bfloat16 in the state, cast once at init
after the trained networks were initialised from them, and used in float32 by the losses."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fewstep_jax import nn, paths
from fewstep_jax.config_base import base_config
from fewstep_jax.errors import ConfigError
from fewstep_jax.inputs import Teacher
from fewstep_jax.methods import build_method

SHAPE = (2,)
BATCH = {'x': jnp.asarray(np.random.default_rng(0).standard_normal((8,) + SHAPE), jnp.float32)}


def _config(method, frozen_dtype):
  config = base_config(method=method, network='mlp', dataset='toy')
  config.network.update(hidden=16, depth=1)
  config.method.update(teacher='in memory', frozen_dtype=frozen_dtype)
  return config


def _teacher(config):
  """A teacher on config's network with N(0, 0.3^2) parameters, so that no zero-initialised layer hides the rest."""
  module = nn.build_network(config.network, num_classes=0)
  shapes = jax.eval_shape(lambda: nn.init_params(module, jax.random.PRNGKey(0), jnp.zeros((1,) + SHAPE)))
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype), shapes)
  return Teacher(network=config.network, readout=paths.readout('edm'), data_shape=SHAPE, num_classes=0,
                 params=params)


def _method_and_state(method_name, frozen_dtype):
  config = _config(method_name, frozen_dtype)
  teacher = _teacher(config)
  method = build_method(config, data_shape=SHAPE, num_classes=0, inputs={'teacher': teacher})
  return method, method.init(jax.random.PRNGKey(0), {'teacher': teacher.params}), teacher


def _relative_difference(a, b) -> float:
  return float(optax.tree.norm(jax.tree.map(jnp.subtract, a, b)) / optax.tree.norm(b))


def test_a_bfloat16_teacher_is_stored_in_bfloat16_and_moves_the_gradient_by_its_rounding_only():
  grads = {}
  for frozen_dtype in (None, 'bfloat16'):
    method, state, teacher = _method_and_state('cd', frozen_dtype)
    stored = {leaf.dtype for leaf in jax.tree.leaves(state.frozen['teacher'])}
    assert stored == {jnp.dtype(jnp.bfloat16 if frozen_dtype else jnp.float32)}
    assert {leaf.dtype for leaf in jax.tree.leaves(state.nets['student'].params)} == {jnp.dtype(jnp.float32)}
    grads[frozen_dtype], _ = jax.jit(method.gradients)(state, BATCH, jax.random.PRNGKey(1))
  difference = _relative_difference(grads['bfloat16'], grads[None])
  # bfloat16 keeps 8 bits of mantissa (relative rounding <= 2^-9 per weight): the gradient moves, but little.
  assert 0 < difference < 2e-2, difference


def test_the_trained_networks_start_from_the_float32_teacher_before_it_is_cast():
  # DMD2's student and critic start from the teacher's parameters: from its float32 values, not the rounded ones.
  _, state, teacher = _method_and_state('dmd2', 'bfloat16')
  assert {leaf.dtype for leaf in jax.tree.leaves(state.frozen['teacher'])} == {jnp.dtype(jnp.bfloat16)}
  for role in ('student', 'critic'):
    for got, want in zip(jax.tree.leaves(state.nets[role].params), jax.tree.leaves(teacher.params)):
      np.testing.assert_array_equal(got, want)


def test_an_unknown_frozen_dtype_is_one_clear_error():
  config = _config('cd', 'float16')
  with pytest.raises(ConfigError, match=r"^unknown method.frozen_dtype 'float16'; use None \(keep them as loaded\) "
                                        r"or one of \['bfloat16', 'float32'\]$"):
    build_method(config, data_shape=SHAPE, num_classes=0, inputs={'teacher': _teacher(config)})

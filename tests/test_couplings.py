"""Minibatch couplings against scipy's Hungarian solver, and the invariants that keep the marginals."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from fewstep_jax import couplings
from fewstep_jax.config_base import base_config
from fewstep_jax.methods import build_method


def batch(n, d, seed, num_classes=None):
  keys = jax.random.split(jax.random.PRNGKey(seed), 3)
  x = jax.random.normal(keys[0], (n, d)) * 0.5 + 1.0
  eps = jax.random.normal(keys[1], (n, d))
  y = None if num_classes is None else jax.random.randint(keys[2], (n,), 0, num_classes)
  return x, eps, y


@pytest.mark.parametrize('n,d,num_classes', [(2, 2, None), (16, 2, None), (64, 8, None), (48, 8, 5)])
def test_auction_reaches_the_optimal_assignment(n, d, num_classes):
  x, eps, y = batch(n, d, n + d, num_classes)
  cost = np.asarray(couplings.pair_costs(x, eps, y))
  perm = np.asarray(jax.jit(couplings.auction_assignment)(jnp.asarray(cost)))
  assert sorted(perm.tolist()) == list(range(n))
  rows, cols = linear_sum_assignment(cost)
  optimum = cost[rows, cols].sum()
  np.testing.assert_allclose(cost[np.arange(n), perm].sum(), optimum, rtol=1e-4)
  # The exact bound: within n * eps_final of the optimum.
  assert cost[np.arange(n), perm].sum() <= optimum + couplings._FINAL_EPS * (cost.max() - cost.min()) + 1e-5


def test_pair_costs_are_normalised_squared_distances_with_a_class_penalty():
  x, eps, y = batch(6, 3, 0, num_classes=2)
  cost = np.asarray(couplings.pair_costs(x, eps, y))
  plain = ((np.asarray(x)[:, None] - np.asarray(eps)[None]) ** 2).sum(-1)
  expected = plain / plain.max() + 2.0 * (np.asarray(y)[:, None] != np.asarray(y)[None])
  np.testing.assert_allclose(cost, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('name', ['exact', 'greedy'])
def test_couplings_permute_the_noise_within_classes_and_lower_the_cost(name):
  x, eps, y = batch(40, 4, 1, num_classes=4)
  paired = np.asarray(couplings.couple(name, jax.random.PRNGKey(2), x, eps, y))
  eps_np = np.asarray(eps)
  # A permutation of the same noise vectors: the noise marginal is unchanged.
  index = [int(np.argmin(((eps_np - row) ** 2).sum(-1))) for row in paired]
  assert sorted(index) == list(range(40))
  np.testing.assert_array_equal(paired, eps_np[index])
  # Pairs stay inside a class: noise i was drawn for the example of class y_i.
  y_np = np.asarray(y)
  np.testing.assert_array_equal(y_np[index], y_np)
  before = ((np.asarray(x) - eps_np) ** 2).sum()
  after = ((np.asarray(x) - paired) ** 2).sum()
  assert after < 0.9 * before


def test_independent_is_the_identity_and_unknown_names_are_refused():
  x, eps, _ = batch(8, 2, 3)
  np.testing.assert_array_equal(couplings.couple('independent', None, x, eps), eps)
  config = base_config(method='flow_matching', network='mlp', dataset='toy')
  config.method.coupling = 'hungarian'
  with pytest.raises(ValueError, match="unknown method.coupling 'hungarian'"):
    build_method(config, data_shape=(2,), num_classes=0)


def test_flow_matching_trains_on_the_coupled_noise():
  config = base_config(method='flow_matching', network='mlp', dataset='toy')
  config.network.hidden = 16
  config.network.depth = 1
  config.method.coupling = 'exact'
  method = build_method(config, data_shape=(2,), num_classes=0)
  key = jax.random.PRNGKey(0)
  x = jax.random.normal(key, (16, 2)) + 3.0
  eps = method.draw_noise(jax.random.PRNGKey(5), x)
  independent = jax.random.normal(jax.random.PRNGKey(5), x.shape)
  assert float(jnp.sum((x - eps) ** 2)) < float(jnp.sum((x - independent) ** 2))
  state = method.init(key)
  _, metrics = jax.jit(method.step)(state, {'x': x}, key)
  assert np.isfinite(float(metrics['loss']))

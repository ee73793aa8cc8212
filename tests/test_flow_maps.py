"""SplitMeanFlow, shortcut models and Consistency-FM against independent math.

Gaussian data x ~ N(0, S^2 I) on the linear path has a linear probability-flow ODE: z_r = z_t sigma(r)/sigma(t)
with sigma(t)^2 = (1 - t)^2 S^2 + t^2, so the exact velocity is v*(z, t) = z (t - (1 - t) S^2) / sigma(t)^2 and
the exact flow map from t to r is z sigma(r) / sigma(t) (the average velocity u* = (z - z_r) / (t - r)).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fewstep_jax.config_base import base_config
from fewstep_jax.methods import build_method

S = 0.7


def sigma(t):
  return jnp.sqrt((1 - t)**2 * S**2 + t**2)


def exact_velocity(z, t):
  t = t[:, None]
  return z * (t - (1 - t) * S**2) / sigma(t)**2


def exact_average_velocity(params, z, r, t, y=None, key=None):
  del params, y, key
  gap = (t - r)[:, None]
  safe = jnp.where(gap > 0, gap, 1.0)
  flow_map = z * (sigma(r) / sigma(t))[:, None]
  return jnp.where(gap > 0, (z - flow_map) / safe, exact_velocity(z, t))


def gaussian_batch(n, key=0):
  keys = jax.random.split(jax.random.PRNGKey(key), 4)
  x = S * jax.random.normal(keys[0], (n, 2))
  eps = jax.random.normal(keys[1], (n, 2))
  t = jax.random.uniform(keys[2], (n,), minval=0.05, maxval=0.95)
  r = t * jax.random.uniform(keys[3], (n,))
  return x, eps, r, t


def make(method, two_times=True, num_classes=0, **hparams):
  config = base_config(method=method, network='mlp', dataset='toy')
  config.network.hidden = 32
  config.network.depth = 2
  config.network.two_times = two_times
  config.network.time_scale = 1.0
  config.method.update(hparams)
  return build_method(config, data_shape=(2,), num_classes=num_classes)


# SplitMeanFlow ------------------------------------------------------------------------------------------------

def test_split_target_with_the_exact_network_is_the_exact_average_velocity():
  method = make('split_meanflow')
  method.average_velocity = exact_average_velocity
  x, eps, r, t = gaussian_batch(64)
  z = (1 - t[:, None]) * x + t[:, None] * eps
  lam = jax.random.uniform(jax.random.PRNGKey(7), (64,))
  s = (1 - lam) * t + lam * r
  target = method.split_target(None, z, r, s, t, lam, None)
  np.testing.assert_allclose(target, exact_average_velocity(None, z, r, t), rtol=1e-4, atol=1e-5)
  # A wrong split point would not be exact: lam reversed breaks the identity.
  wrong = method.split_target(None, z, r, s, t, 1 - lam, None)
  assert float(jnp.max(jnp.abs(wrong - exact_average_velocity(None, z, r, t)))) > 1e-2


def test_split_times_are_ordered_with_the_boundary_slice():
  method = make('split_meanflow', boundary_fraction=0.25)
  r, s, t, lam = method.sample_times(jax.random.PRNGKey(0), 32)
  assert bool(jnp.all(r <= s)) and bool(jnp.all(s <= t))
  np.testing.assert_allclose(s, (1 - lam) * t + lam * r, rtol=1e-6)
  assert method.num_split(32) == 24
  np.testing.assert_array_equal(r[24:], t[24:])
  assert bool(jnp.all(r[:24] < t[:24]))


def test_split_meanflow_boundary_is_flow_matching_and_the_teacher_replaces_v():
  x, eps, _, _ = gaussian_batch(16, key=3)
  batch = {'x': x}
  method = make('split_meanflow', boundary_fraction=1.0)
  params = jax.tree.map(lambda p: p + 0.1, method.init(jax.random.PRNGKey(0)).nets['student'].params)
  key = jax.random.PRNGKey(4)
  loss, _ = method.loss(params, batch, key)
  # Independent recomputation: with every sample on the boundary the loss is flow matching on u(z, t, t).
  eps_key, time_key, _, _ = jax.random.split(key, 4)
  eps = jax.random.normal(eps_key, x.shape)
  _, _, t, _ = method.sample_times(time_key, 16)
  z = (1 - t[:, None]) * x + t[:, None] * eps
  u = method.average_velocity(params, z, t, t)
  np.testing.assert_allclose(loss, jnp.mean(jnp.square(u - (eps - x))), rtol=1e-5)

  class ExactTeacher:
    def flow_velocity(self, params, z, t, y=None):
      return exact_velocity(z, t)

  method.hparams.unlock()
  method.hparams.teacher = 'unused'
  method.teacher_method = ExactTeacher()
  loss_teacher, _ = method.loss(params, batch, key, frozen={'teacher': None})
  np.testing.assert_allclose(loss_teacher, jnp.mean(jnp.square(u - exact_velocity(z, t))), rtol=1e-5)


def test_split_meanflow_needs_a_trained_teacher_run(tmp_path):
  config = base_config(method='split_meanflow', network='mlp', dataset='toy')
  config.network.two_times = True
  config.method.teacher = str(tmp_path / 'missing')
  method = build_method(config, data_shape=(2,), num_classes=0)
  with pytest.raises(FileNotFoundError, match='not a trained fewstep_jax run'):
    method.frozen_params()
  config.network.two_times = False
  with pytest.raises(ValueError, match='two_times=True'):
    build_method(config, data_shape=(2,), num_classes=0)


# Shortcut models ----------------------------------------------------------------------------------------------

def test_shortcut_bootstrap_target_with_the_exact_network_is_the_exact_double_step():
  method = make('shortcut', target_ema=0.0)
  method.average_velocity = exact_average_velocity
  x, eps, _, _ = gaussian_batch(64, key=2)
  half = 2.0 ** -jax.random.randint(jax.random.PRNGKey(1), (64,), 1, 8).astype(jnp.float32)
  t = jnp.clip(2 * half + jax.random.uniform(jax.random.PRNGKey(2), (64,)) * (1 - 2 * half), 0, 1)
  z = (1 - t[:, None]) * x + t[:, None] * eps
  target = method.bootstrap_target(None, z, t, half, None)
  np.testing.assert_allclose(target, exact_average_velocity(None, z, t - 2 * half, t), rtol=1e-4, atol=1e-5)
  # One half step alone is not the double step (the test can tell them apart).
  single = method.step_velocity(None, z, t, half)
  assert float(jnp.max(jnp.abs(single - target))) > 1e-3


def test_shortcut_times_sit_on_the_grid_of_their_step_with_equal_level_shares():
  method = make('shortcut', base_steps=8, bootstrap_fraction=0.25, target_ema=0.0)
  t, step = method.sample_times(jax.random.PRNGKey(0), 48)
  np.testing.assert_array_equal(step[12:], 1 / 8)  # Flow matching at the finest level.
  np.testing.assert_array_equal(np.sort(np.asarray(step[:12])), np.repeat([0.25, 0.5, 1.0], 4))
  cells = np.asarray(t / step)
  np.testing.assert_allclose(cells, np.round(cells), atol=1e-5)
  assert bool(jnp.all(t >= step)) and bool(jnp.all(t <= 1.0))
  assert len(np.unique(np.asarray(t[12:]))) > 3


def test_shortcut_flow_part_is_flow_matching_and_targets_come_from_the_ema_parameters():
  method = make('shortcut', bootstrap_fraction=0.0)
  state = method.init(jax.random.PRNGKey(0))
  params = jax.tree.map(lambda p: p + 0.1, state.nets['student'].params)
  x = gaussian_batch(16, key=5)[0]
  key = jax.random.PRNGKey(3)
  loss, _ = method.loss(params, {'x': x}, key)
  eps_key, time_key, _, _ = jax.random.split(key, 4)
  eps = jax.random.normal(eps_key, x.shape)
  t, step = method.sample_times(time_key, 16)
  z = (1 - t[:, None]) * x + t[:, None] * eps
  s = method.step_velocity(params, z, t, jnp.full((16,), 1 / 128))
  np.testing.assert_allclose(loss, jnp.mean(jnp.square(s - (eps - x))), rtol=1e-5)
  assert 'target_params' in make('shortcut').loss_kwargs(state)
  with pytest.raises(ValueError, match='not among optim.ema_rates'):
    make('shortcut', target_ema=0.95)

"""MeanFlow against independent math.

For Gaussian data x ~ N(0, s^2 I) the probability-flow ODE is linear: z_r = z_t sigma_r / sigma_t with
sigma_t^2 = (1 - t)^2 s^2 + t^2, so the exact average velocity is u*(z, r, t) = z (1 - sigma_r / sigma_t) / (t - r)
and the exact marginal velocity is v*(z, t) = z (t - (1 - t) s^2) / sigma_t^2. With u = u* and the conditional
velocity v_cond as tangent, the MeanFlow identity u* = v* - (t - r) (v* du*/dz + du*/dt) gives the target
u* + (1 - (t - r) du*/dz) (v_cond - v*) = u* + (sigma_r / sigma_t) (v_cond - v*) pointwise, whose conditional
mean is u*.
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


def exact_average_velocity(params, z, r, t, y=None, key=None):
  del params, y, key
  t_, r_ = t[:, None], r[:, None]
  marginal = z * ((t_ - (1 - t_) * S**2) / sigma(t_)**2)
  interval = jnp.where(t_ - r_ > 0, t_ - r_, 1.0)
  return jnp.where(t_ - r_ > 0, z * (1 - sigma(r_) / sigma(t_)) / interval, marginal)


def make(time_scale=1000.0, dropout=0.0, **hparams):
  config = base_config(method='meanflow', network='mlp', dataset='toy')
  config.network.time_scale = time_scale
  config.network.dropout = dropout
  config.network.hidden = 32
  config.network.depth = 2
  config.network.two_times = True
  config.method.update(hparams)
  return build_method(config, data_shape=(2,), num_classes=0)


def gaussian_batch(n, key=0):
  keys = jax.random.split(jax.random.PRNGKey(key), 4)
  x = S * jax.random.normal(keys[0], (n, 2))
  eps = jax.random.normal(keys[1], (n, 2))
  t = jax.random.uniform(keys[2], (n,), minval=0.05, maxval=0.95)
  r = t * jax.random.uniform(keys[3], (n,))
  return x, eps, r, t


def test_target_with_exact_network_is_the_exact_average_velocity_plus_conditional_noise():
  method = make(jvp_sub_batch=False)
  method.average_velocity = exact_average_velocity
  x, eps, r, t = gaussian_batch(64)
  z = (1 - t[:, None]) * x + t[:, None] * eps
  v_cond = eps - x
  u, target = method.prediction_and_target(None, z, r, t, v_cond, None, None)
  u_exact = exact_average_velocity(None, z, r, t)
  v_exact = exact_average_velocity(None, z, t, t)
  np.testing.assert_allclose(u, u_exact, rtol=1e-6)
  ratio = (sigma(r) / sigma(t))[:, None]
  np.testing.assert_allclose(target, u_exact + ratio * (v_cond - v_exact), atol=2e-5)
  # With the marginal velocity as tangent, the target is exactly u* (the MeanFlow identity).
  _, target_marginal = method.prediction_and_target(None, z, r, t, v_exact, None, None)
  np.testing.assert_allclose(target_marginal, u_exact, atol=2e-5)


def test_jvp_matches_central_finite_difference():
  """The tangent (v, 0, 1) through (z, r, t), with the network seeing (t, t - r). time_scale = 1 keeps the
  network smooth in t, so a float32 central difference with step 1e-3 is accurate to about 1e-3."""
  method = make(jvp_sub_batch=False, time_scale=1.0)
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(5), p.shape),
                        method.init(jax.random.PRNGKey(0)).nets['student'].params)
  x, eps, r, t = gaussian_batch(8, key=1)
  z, v = (1 - t[:, None]) * x + t[:, None] * eps, eps - x
  with jax.default_matmul_precision('highest'):
    u, target = method.prediction_and_target(params, z, r, t, v, None, None)
    dudt = (v - target) / (t - r)[:, None]
    h = 1e-3
    u_plus = method.average_velocity(params, z + h * v, r, t + h)
    u_minus = method.average_velocity(params, z - h * v, r, t - h)
  finite_difference = (u_plus - u_minus) / (2 * h)
  np.testing.assert_allclose(dudt, finite_difference, rtol=1e-2, atol=1e-3)
  assert float(jnp.max(jnp.abs(dudt))) > 0.1  # A non-trivial derivative was compared.
  # The r tangent is zero: moving r alone changes u, so a wrong tangent would show.
  u_r = method.average_velocity(params, z, r + h, t)
  assert float(jnp.max(jnp.abs(u_r - u))) > 1e-4


def test_r_equal_t_reduces_to_flow_matching():
  method = make(ratio_r_equal_t=1.0)
  params = method.init(jax.random.PRNGKey(0)).nets['student'].params
  x, eps, _, t = gaussian_batch(16)
  r, t_sampled = method.sample_times(jax.random.PRNGKey(3), 16)
  np.testing.assert_array_equal(r, t_sampled)
  z, v = (1 - t[:, None]) * x + t[:, None] * eps, eps - x
  u, target = method.prediction_and_target(params, z, t, t, v, None, None)
  np.testing.assert_array_equal(target, v)  # u_tgt = v: flow matching on u(z, t, t).
  np.testing.assert_allclose(u, method.average_velocity(params, z, t, t), rtol=1e-6)


@pytest.mark.slow  # About 40 s; the sub-batch JVP (the default) without dropout runs in the default run.
def test_sub_batch_jvp_with_dropout_is_the_full_batch_loss_with_the_same_per_row_masks():
  """The JVP on the r != t head and a plain pass on the r = t tail give the full-batch loss and gradients. With
  dropout the two parts draw their masks from fold_in(key, 0) (the head) and fold_in(key, 1) (the tail);
  reference: the full-batch JVP through a network whose rows get exactly those masks."""
  full, sub = make(jvp_sub_batch=False, dropout=0.3), make(jvp_sub_batch=True, dropout=0.3)
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(5), p.shape),
                        full.init(jax.random.PRNGKey(0)).nets['student'].params)
  batch = {'x': S * jax.random.normal(jax.random.PRNGKey(1), (32, 2))}
  key = jax.random.PRNGKey(2)
  head = sub.num_jvp(32)
  network = full.average_velocity

  def per_row_masks(params, z, r, t, y=None, key=None):
    parts = [network(params, z[rows], r[rows], t[rows], None, jax.random.fold_in(key, i))
             for i, rows in enumerate((slice(0, head), slice(head, None)))]
    return jnp.concatenate(parts)

  (loss_sub, metrics_sub), grads_sub = jax.value_and_grad(sub.loss, has_aux=True)(params, batch, key)
  loss_one_key, _ = full.loss(params, batch, key)
  full.average_velocity = per_row_masks
  (loss_ref, metrics_ref), grads_ref = jax.value_and_grad(full.loss, has_aux=True)(params, batch, key)
  np.testing.assert_allclose(loss_sub, loss_ref, rtol=1e-5)
  np.testing.assert_allclose(metrics_sub['mse'], metrics_ref['mse'], rtol=1e-5)
  for got, want in zip(jax.tree.leaves(grads_sub), jax.tree.leaves(grads_ref)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  assert abs(float(loss_one_key) - float(loss_sub)) > 1e-3 * abs(float(loss_sub))  # Dropout is on: masks matter.
  # Tail row j does not reuse head row j's mask.
  z = jnp.ones((32, 2))
  u = sub.prediction_and_target(params, z, jnp.zeros(32), jnp.full((32,), 0.5), z, None, key)[0]
  assert not np.allclose(u[:head], u[head:2 * head])


def test_time_pairs_are_ordered_with_the_configured_share_of_r_equal_t():
  method = make(ratio_r_equal_t=0.75)
  r, t = method.sample_times(jax.random.PRNGKey(0), 64)
  assert bool(jnp.all(r <= t))
  assert int(jnp.sum(r == t)) == 48 and bool(jnp.all(r[:16] < t[:16]))


def test_one_step_with_exact_average_velocity_maps_noise_to_data():
  method = make()
  method.average_velocity = exact_average_velocity
  key = jax.random.PRNGKey(4)
  noise = jax.random.normal(key, (16, 2))
  for nfe in (1, 2, 4):
    np.testing.assert_allclose(method.sample_at(None, key, 16, nfe), S * noise, atol=1e-5)


def test_folded_guidance_mixes_velocities_and_spares_dropped_labels():
  config = base_config(method='meanflow', network='mlp', dataset='toy')
  config.network.two_times = True
  config.method.update(dict(omega=2.0, kappa=0.5, label_dropout=0.0, guidance_t_end=0.5))
  method = build_method(config, data_shape=(2,), num_classes=3)
  # A model that reveals its label: u = y + 1 (null label 3 -> 4).
  method.average_velocity = lambda params, z, r, t, y=None, key=None: jnp.broadcast_to(
      (y + 1.0)[:, None], z.shape)
  y = jnp.array([0, 1, 2, 3])
  t = jnp.array([0.2, 0.3, 0.9, 0.2])
  v = jnp.ones((4, 2))
  where = method.guided_rows(t, y, y)  # label_dropout 0: the training labels are y.
  v_g = method.folded_guidance(None, jnp.zeros((4, 2)), t, v, y, 2.0, 0.5, where)
  expected = 2.0 * 1.0 + (1 - 2.0 - 0.5) * 4.0 + 0.5 * (y + 1.0)
  # Inside [0, 0.5] and labelled: guided. Outside the interval, or the null label: plain v.
  np.testing.assert_allclose(v_g[:, 0], [expected[0], expected[1], 1.0, 1.0])


def test_refuses_one_time_network():
  config = base_config(method='meanflow', network='mlp', dataset='toy')
  with pytest.raises(ValueError, match='two_times=True'):
    build_method(config, data_shape=(2,), num_classes=0)


def labelled(dropout=0.0, **hparams):
  config = base_config(method='meanflow', network='mlp', dataset='toy')
  config.network.update(dict(two_times=True, dropout=dropout, hidden=32, depth=2))
  config.method.update(dict(omega=0.6, kappa=0.3, guidance_t_end=0.8), **hparams)
  return build_method(config, data_shape=(2,), num_classes=3)


@pytest.mark.parametrize('ratio', [0.75, 1.0])
def test_folded_guidance_reuses_the_r_equal_t_prediction_with_the_same_loss_and_gradients(ratio):
  """Without dropout, the r = t rows' conditional guidance term is their own prediction: taking it from there
  instead of a second pass changes neither the loss nor the gradients, and calls the network once less."""
  shared = labelled(ratio_r_equal_t=ratio)
  separate = labelled(ratio_r_equal_t=ratio)
  separate.shares_conditional_pass = lambda batch: False
  assert shared.shares_conditional_pass(32)
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(5), p.shape),
                        shared.init(jax.random.PRNGKey(0)).nets['student'].params)
  batch = {'x': S * jax.random.normal(jax.random.PRNGKey(1), (32, 2)), 'y': jnp.arange(32) % 3}
  rows = {}
  for name, method in (('shared', shared), ('separate', separate)):
    network, rows[name] = method.average_velocity, []

    def counted(params, z, r, t, y=None, key=None, network=network, calls=rows[name]):
      calls.append(z.shape[0])
      return network(params, z, r, t, y, key)
    method.average_velocity = counted
  # Jitted: traced once (each network call counted once), compiled once, instead of dispatched op by op.
  (loss_shared, _), grads_shared = jax.jit(jax.value_and_grad(shared.loss, has_aux=True))(
      params, batch, jax.random.PRNGKey(2))
  (loss_separate, _), grads_separate = jax.jit(jax.value_and_grad(separate.loss, has_aux=True))(
      params, batch, jax.random.PRNGKey(2))
  np.testing.assert_allclose(loss_shared, loss_separate, rtol=1e-6)
  for got, want in zip(jax.tree.leaves(grads_shared), jax.tree.leaves(grads_separate)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  tail = 32 - shared.num_jvp(32)
  # The separate loss runs the conditional term on all 32 rows; the shared one on the r != t rows only.
  assert sum(rows['separate']) - sum(rows['shared']) == tail


def test_folded_guidance_keeps_its_own_pass_under_dropout():
  assert not labelled(dropout=0.2).shares_conditional_pass(32)
  assert not labelled(kappa=0.0).shares_conditional_pass(32)
  assert not labelled(jvp_sub_batch=False).shares_conditional_pass(32)
  assert not labelled(ratio_r_equal_t=0.0).shares_conditional_pass(32)

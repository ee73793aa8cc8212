"""Teacher objectives and samplers against closed forms.

For Gaussian data x ~ N(0, s^2 I) every quantity is analytic:
- flow matching: the optimal velocity is v*(z, t) = z (t - (1 - t) s^2) / ((1 - t)^2 s^2 + t^2), and the loss at
  v* is E_t[s^2 / ((1 - t)^2 s^2 + t^2)], which for s = 1 and uniform t is pi / 2;
- EDM: the optimal denoiser is D*(x, sigma) = x s^2 / (s^2 + sigma^2), and with s = sigma_data the weighted loss
  at D* is exactly 1 at every sigma;
- the probability-flow ODE maps noise z to data s z (flow) and x_max to x_max s / sqrt(s^2 + sigma_max^2) (EDM).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fewstep_jax import paths, sampling, timesteps
from fewstep_jax.config_base import base_config
from fewstep_jax.methods import build_method
from fewstep_jax.methods.base import accumulate_gradients, drop_labels, guided


def make(method, data_shape=(2,), num_classes=0, **hparams):
  config = base_config(method=method, network='mlp', dataset='toy')
  config.network.hidden = 16
  config.network.depth = 1
  config.method.update(hparams)
  return build_method(config, data_shape=data_shape, num_classes=num_classes)


def gaussian_velocity(s):
  return lambda params, z, t, r=None, y=None, key=None: z * ((t - (1 - t) * s**2) / (
      (1 - t)**2 * s**2 + t**2))[:, None]


def gaussian_denoiser(s):
  return lambda params, x, sigma, r=None, y=None, key=None: x * (s**2 / (s**2 + sigma**2))[:, None]


def test_flow_matching_loss_at_optimal_velocity_is_pi_over_two():
  method = make('flow_matching', time_sampler='uniform', label_dropout=0.0)
  method.velocity = gaussian_velocity(1.0)
  x = jax.random.normal(jax.random.PRNGKey(0), (100_000, 2))
  loss, metrics = method.loss(None, {'x': x}, jax.random.PRNGKey(1))
  np.testing.assert_allclose(loss, math.pi / 2, rtol=0.01)
  assert metrics['loss'] == loss
  # Any other field does worse.
  method.velocity = lambda params, z, t, r=None, y=None, key=None: gaussian_velocity(1.0)(
      params, z, t) + 0.1
  worse, _ = method.loss(None, {'x': x}, jax.random.PRNGKey(1))
  np.testing.assert_allclose(worse, math.pi / 2 + 0.01, rtol=0.01)


def test_edm_loss_at_optimal_denoiser_is_one():
  method = make('edm', label_dropout=0.0)
  method.denoise = gaussian_denoiser(0.5)
  x = 0.5 * jax.random.normal(jax.random.PRNGKey(0), (100_000, 2))
  loss, _ = method.loss(None, {'x': x}, jax.random.PRNGKey(1))
  np.testing.assert_allclose(loss, 1.0, rtol=0.01)


def test_flow_samplers_solve_the_gaussian_ode():
  s = 0.5
  method = make('flow_matching')
  method.velocity = gaussian_velocity(s)
  key = jax.random.PRNGKey(3)
  noise = jax.random.normal(key, (64, 2))
  errors = {}
  for solver, nfe in [('euler', 8), ('euler', 32), ('heun', 34), ('heun', 100)]:
    samples = method.sample(None, key, 64, nfe, solver=solver)
    errors[solver, nfe] = float(jnp.max(jnp.abs(samples - s * noise)))
  assert errors['heun', 34] < 5e-3
  assert errors['euler', 32] < errors['euler', 8] / 3  # First order.
  assert errors['heun', 100] < errors['heun', 34] / 6  # Second order: 17 -> 50 steps, (50 / 17)^2 = 8.7.


def test_edm_heun_on_karras_grid_solves_the_gaussian_ode():
  s = 0.5
  method = make('edm')
  method.denoise = gaussian_denoiser(s)
  key = jax.random.PRNGKey(4)
  x_max = method.hparams.sigma_max * jax.random.normal(key, (64, 2))
  exact = x_max * s / math.sqrt(s**2 + method.hparams.sigma_max**2)
  relative_error = {nfe: float(jnp.max(jnp.abs(method.sample(None, key, 64, nfe) / exact - 1)))
                    for nfe in (35, 99)}
  # The Karras grid's large steps at high sigma leave ~5% error at 18 steps on this ODE (same in a plain
  # numpy Heun); it falls at second order.
  assert relative_error[35] < 0.06
  assert relative_error[99] < relative_error[35] / 5


def test_point_mass_is_reached_in_one_step():
  """Straight paths: for data at a single point x*, one Euler step from t = 1 lands exactly on x*."""
  target = jnp.array([0.3, -1.2])
  method = make('flow_matching')
  method.velocity = lambda params, z, t, r=None, y=None, key=None: (z - target) / t[:, None]
  samples = method.sample(None, jax.random.PRNGKey(0), 5, 1, solver='euler')
  np.testing.assert_allclose(samples, jnp.broadcast_to(target, (5, 2)), atol=1e-6)


def test_solver_nfe_counts():
  calls = []

  def drift(x, s):
    calls.append(1)  # Traced once per call site: count evaluations by tracing the unrolled solve.
    return -x

  for solver, nfe, singular_end, expected in [('euler', 4, False, 4), ('heun', 7, False, 7),
                                              ('heun', 8, False, 8), ('heun', 8, True, 7),
                                              ('heun', 1, True, 1), ('heun', 2, False, 2)]:
    calls.clear()
    with jax.disable_jit():
      sampling.solve(drift, jnp.ones((2, 2)), timesteps.flow_time_grid, solver, nfe, singular_end)
    assert len(calls) == expected, (solver, nfe, len(calls))


def test_classifier_free_guidance_mix():
  # A model that reveals its label: m = y + 1 (null label 3 -> 4).
  model = lambda z, t, y: jnp.broadcast_to((y + 1.0)[:, None], z.shape)
  labels = jnp.array([0, 1, 2])
  z, t = jnp.zeros((3, 2)), jnp.full((3,), 0.5)
  np.testing.assert_allclose(guided(model, labels, 2.0, 3)(z, t)[:, 0], 4.0 + 2.0 * (labels + 1.0 - 4.0))
  np.testing.assert_allclose(guided(model, labels, 1.0, 3)(z, t)[:, 0], labels + 1.0)


def test_label_dropout_rate_and_null_label():
  y = jnp.zeros((20_000,), jnp.int32)
  dropped = drop_labels(jax.random.PRNGKey(0), y, 0.1, null_label=10)
  assert set(np.unique(dropped)) == {0, 10}
  np.testing.assert_allclose(jnp.mean(dropped == 10), 0.1, atol=0.01)


def test_gradient_accumulation_equals_full_batch_gradient():
  def loss_fn(params, batch, key):
    del key
    loss = jnp.mean((batch['x'] @ params['w'] - batch['y']) ** 2)
    return loss, {'loss': loss}

  key = jax.random.PRNGKey(0)
  batch = {'x': jax.random.normal(key, (12, 3)), 'y': jax.random.normal(jax.random.PRNGKey(1), (12,))}
  params = {'w': jnp.array([0.5, -1.0, 2.0])}
  full_grads, full_metrics = accumulate_gradients(loss_fn, params, batch, key, 1)
  micro_grads, micro_metrics = accumulate_gradients(loss_fn, params, batch, key, 3)
  np.testing.assert_allclose(micro_grads['w'], full_grads['w'], rtol=1e-5)
  np.testing.assert_allclose(micro_metrics['loss'], full_metrics['loss'], rtol=1e-5)


@pytest.mark.parametrize('method_name', ['flow_matching', 'edm'])
def test_one_training_step_reduces_loss_on_fixed_batch(method_name):
  method = make(method_name, label_dropout=0.0)
  state = method.init(jax.random.PRNGKey(0))
  batch = {'x': jax.random.normal(jax.random.PRNGKey(1), (64, 2))}
  key = jax.random.PRNGKey(2)
  step = jax.jit(method.step)
  first = method.loss(state.nets['student'].params, batch, key)[0]
  for _ in range(20):
    state, metrics = step(state, batch, key)
  assert int(state.step) == 20
  assert method.loss(state.nets['student'].params, batch, key)[0] < first
  assert set(metrics) == {'loss', 'grad_norm'}


def test_guided_sampling_counts_both_network_calls():
  method = make('flow_matching', num_classes=3)
  calls = []

  def velocity(params, z, t, r=None, y=None, key=None):
    calls.append(1)
    return -z

  method.velocity = velocity
  labels = jnp.array([0, 1])
  with jax.disable_jit():
    method.sample(None, jax.random.PRNGKey(0), 2, 6, labels=labels, guidance=2.0, solver='heun')
  assert len(calls) == 6
  with pytest.raises(ValueError, match='nfe=5 must be even'):
    method.sample(None, jax.random.PRNGKey(0), 2, 5, labels=labels, guidance=2.0)


def test_guided_edm_sampling_counts_network_calls_with_final_euler_step():
  method = make('edm', num_classes=3)
  calls = []

  def denoise(params, x, sigma, r=None, y=None, key=None):
    calls.append(1)
    return 0.0 * x

  method.denoise = denoise
  with jax.disable_jit():
    method.sample(None, jax.random.PRNGKey(0), 2, 70, labels=jnp.array([0, 1]), guidance=1.5)
  assert len(calls) == 70  # 35 guided evaluations: 17 Heun steps and a final Euler step, two calls each.


def test_a_planned_solve_compiles_once_for_every_nfe_and_follows_heun_by_hand():
  drift = lambda x, s: -x * (1.0 + s[:, None])
  solve = jax.jit(lambda x, plan: sampling.solve_plan(drift, x, plan, 'heun'))
  x = np.linspace(0.5, 1.5, 6, dtype=np.float32).reshape(3, 2)
  for nfe, singular_end in [(1, True), (2, False), (4, False), (5, False), (7, True), (10, False)]:
    plan = sampling.solver_plan(timesteps.flow_time_grid, 'heun', nfe, singular_end)
    grid = np.linspace(1.0, 0.0, sampling.solver_steps('heun', nfe, singular_end) + 1)
    want, calls = x.astype(np.float64), 0
    for i, (s, s_next) in enumerate(zip(grid[:-1], grid[1:])):
      d = -want * (1.0 + s)
      euler = want + (s_next - s) * d
      calls += 1
      if i == len(grid) - 2 and (singular_end or nfe % 2):
        want = euler
      else:
        want, calls = want + (s_next - s) * 0.5 * (d - euler * (1.0 + s_next)), calls + 1
    assert calls == (nfe if not singular_end or nfe % 2 else nfe - 1)
    np.testing.assert_allclose(solve(x, plan), want, rtol=1e-5, err_msg=str(nfe))
  assert solve._cache_size() == 1


def test_a_planned_consistency_sampler_compiles_once_and_equals_the_unrolled_one():
  path = paths.EDMPath()
  x0_fn = lambda x, t: jnp.tanh(x) * (1.0 + 0.1 * t[:, None])
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 2)) * 80.0
  planned = jax.jit(lambda x, plan: sampling.consistency_sample(x0_fn, path, plan, x, jax.random.PRNGKey(1), 0.5))
  for times in ([80.0], [80.0, 1.0], [80.0, 10.0, 2.0, 0.5]):
    unrolled = sampling.consistency_sample(x0_fn, path, times, x, jax.random.PRNGKey(1), 0.5)
    np.testing.assert_allclose(planned(x, sampling.consistency_plan(times)), unrolled, rtol=1e-5, atol=1e-6)
  assert planned._cache_size() == 1

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
from fewstep_jax.methods.base import accumulate_gradients


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
    samples = method.sample_at(None, key, 64, nfe, solver=solver)
    errors[solver, nfe] = float(jnp.max(jnp.abs(samples - s * noise)))
  # Heun at 34 evaluations: 18 steps, the first (from t = 1) and the last (onto t = 0) Euler steps.
  assert errors['heun', 34] < 1e-2
  assert errors['euler', 32] < errors['euler', 8] / 3  # First order.
  assert errors['heun', 100] < errors['heun', 34] / 6  # Second order: 18 -> 51 steps, (51 / 18)^2 = 8.0.


def test_edm_heun_on_karras_grid_solves_the_gaussian_ode():
  s = 0.5
  method = make('edm')
  method.denoise = gaussian_denoiser(s)
  key = jax.random.PRNGKey(4)
  x_max = method.hparams.sigma_max * jax.random.normal(key, (64, 2))
  exact = x_max * s / math.sqrt(s**2 + method.hparams.sigma_max**2)
  relative_error = {nfe: float(jnp.max(jnp.abs(method.sample_at(None, key, 64, nfe) / exact - 1)))
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
  samples = method.sample_at(None, jax.random.PRNGKey(0), 5, 1, solver='euler')
  np.testing.assert_allclose(samples, jnp.broadcast_to(target, (5, 2)), atol=1e-6)


def test_solver_nfe_counts():
  """Euler spends nfe evaluations; Heun nfe wherever its sound corrections can (flow matching's uniform grid from
  4 evaluations on; 2 and 3 are Euler steps, whose first step from t = 1 is never corrected)."""
  calls = []

  def drift(x, s):
    calls.append(1)  # Traced once per call site: count evaluations by tracing the unrolled solve.
    return -x

  for solver, nfe in [('euler', 4), ('heun', 1), ('heun', 2), ('heun', 3), ('heun', 4), ('heun', 7), ('heun', 8),
                      ('heun', 25)]:
    calls.clear()
    with jax.disable_jit():
      sampling.solve(drift, jnp.ones((2, 2)), timesteps.flow_time_grid, solver, nfe, paths.sigma_from_t)
    assert len(calls) == nfe, (solver, nfe, len(calls))


def test_heun_corrects_only_steps_that_keep_a_quarter_of_the_noise_level():
  """EDM's published 18-step Karras grid is corrected on every step but the last (35 NFE); at 3 NFE Heun takes three
  Euler steps instead of a step from sigma_max to sigma_min corrected there; flow matching never corrects its first
  step from t = 1 (infinite noise level) or its step onto t = 0."""
  karras = lambda k: np.concatenate([np.asarray(timesteps.karras_sigmas(k)), [0.0]])
  grid, corrected = sampling.heun_plan(karras, 35, lambda s: s)
  assert len(grid) == 19 and corrected.tolist() == [True] * 17 + [False]
  grid, corrected = sampling.heun_plan(karras, 3, lambda s: s)
  assert len(grid) == 4 and not corrected.any()
  grid, corrected = sampling.heun_plan(timesteps.flow_time_grid, 9, paths.sigma_from_t)
  assert corrected[0] == False and corrected[-1] == False and len(corrected) + corrected.sum() == 9
  levels = paths.sigma_from_t(np.asarray(grid, np.float64))
  for i in np.flatnonzero(corrected):
    assert levels[i + 1] >= 0.25 * levels[i] > 0


@pytest.mark.slow  # 80 sampler compiles, about 45 s on two cores: `pytest -m slow`.
def test_heun_is_sound_at_every_nfe_on_an_exact_gaussian_mixture_teacher():
  """Eight narrow Gaussians (the toy's modes, std 0.14 at radius 1.4) with their exact denoiser as an EDM teacher and
  its exact velocity as a flow teacher: the sliced W2 of 2000 samples against the mixture never blows up (at most
  the 1-NFE sampler's, the data's mean) and falls with the NFE to near the floor, for both solvers."""
  from fewstep_jax.eval import metrics
  radius, std = 1.0 / np.sqrt(0.51), 0.1 / np.sqrt(0.51)
  angles = 2 * np.pi * np.arange(8) / 8
  modes = jnp.asarray(np.stack([radius * np.cos(angles), radius * np.sin(angles)], 1), jnp.float32)

  def denoise(x, sigma):
    var = std**2 + sigma[:, None]**2
    weights = jax.nn.softmax(-jnp.sum((x[:, None] - modes) ** 2, -1) / (2 * var), -1)
    return jnp.sum(weights[:, :, None] * (modes + (std**2 / var)[:, :, None] * (x[:, None] - modes)), 1)

  def velocity(z, t):
    t = jnp.minimum(t, 1 - 1e-6)[:, None]  # Never evaluated at t = 0; at t = 1 the limit.
    x0 = denoise(z / (1 - t), (t / (1 - t))[:, 0])
    return (z - x0) / t  # eps - x0, eps = (z - (1 - t) x0) / t.

  key_a, key_b, key_c = jax.random.split(jax.random.PRNGKey(0), 3)
  n = 2000
  truth = lambda key: modes[jax.random.randint(key, (n,), 0, 8)] + std * jax.random.normal(jax.random.fold_in(key, 1),
                                                                                             (n, 2))
  reference, noise = truth(key_a), jax.random.normal(key_c, (n, 2))
  distance = lambda x: float(metrics.sliced_wasserstein2(x, reference, key_b))
  floor = distance(truth(jax.random.fold_in(key_a, 7)))
  karras = lambda k: jnp.concatenate([timesteps.karras_sigmas(k), jnp.zeros(1)])
  edm_drift = lambda x, sigma: (x - denoise(x, sigma)) / sigma[:, None]
  teachers = {'edm': (edm_drift, 80.0 * noise, karras, lambda s: s),
              'flow': (velocity, noise, timesteps.flow_time_grid, paths.sigma_from_t)}
  for name, (drift, start, make_grid, level) in teachers.items():
    for solver in sampling.SOLVERS:
      solve = jax.jit(lambda plan: sampling.solve_plan(drift, start, plan, solver))
      errors = [distance(solve(sampling.solver_plan(make_grid, solver, nfe, level))) for nfe in range(1, 21)]
      assert max(errors) <= errors[0] * 1.01, (name, solver, np.round(errors, 4))
      assert min(errors[-4:]) < 4 * floor, (name, solver, np.round(errors, 4))
      assert np.mean(errors[10:]) < 0.1 * np.mean(errors[:3]), (name, solver, np.round(errors, 4))


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
    method.sample_at(None, jax.random.PRNGKey(0), 2, 6, labels=labels, guidance=2.0, solver='heun')
  assert len(calls) == 6
  with pytest.raises(ValueError, match='nfe=5 must be even'):
    method.sample_at(None, jax.random.PRNGKey(0), 2, 5, labels=labels, guidance=2.0)


def test_guided_edm_sampling_counts_network_calls_with_final_euler_step():
  method = make('edm', num_classes=3)
  calls = []

  def denoise(params, x, sigma, r=None, y=None, key=None):
    calls.append(1)
    return 0.0 * x

  method.denoise = denoise
  with jax.disable_jit():
    method.sample_at(None, jax.random.PRNGKey(0), 2, 70, labels=jnp.array([0, 1]), guidance=1.5)
  assert len(calls) == 70  # 35 guided evaluations: 17 Heun steps and a final Euler step, two calls each.


def test_a_planned_solve_compiles_once_for_every_nfe_and_follows_heun_by_hand():
  drift = lambda x, s: -x * (1.0 + s[:, None])
  solve = jax.jit(lambda x, plan: sampling.solve_plan(drift, x, plan, 'heun'))
  x = np.linspace(0.5, 1.5, 6, dtype=np.float32).reshape(3, 2)
  for nfe in (1, 2, 4, 5, 7, 10):
    plan = sampling.solver_plan(timesteps.flow_time_grid, 'heun', nfe, paths.sigma_from_t)
    steps = int(plan.num_steps)
    grid, corrected = np.linspace(1.0, 0.0, steps + 1), np.asarray(plan.corrected)[:steps]
    want, calls = x.astype(np.float64), 0
    for i, (s, s_next) in enumerate(zip(grid[:-1], grid[1:])):
      d = -want * (1.0 + s)
      euler = want + (s_next - s) * d
      calls += 1
      if corrected[i]:
        want, calls = want + (s_next - s) * 0.5 * (d - euler * (1.0 + s_next)), calls + 1
      else:
        want = euler
    assert calls == nfe
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

"""sCT / sCD against independent math.

TrigFlow with sigma_d: x_tau = cos(tau) x + sin(tau) z, f(x_tau, tau) = cos(tau) x_tau - sin(tau) sigma_d F.
- The consistency function meets its boundary f(x, 0) = x exactly.
- The JVP tangent J equals cos tau sin tau times a central finite difference of F along the path.
- With w = 1, g = cos(tau) d/dtau f-(x_tau(tau), tau), the total derivative along the path taken by autodiff of
  the composed function (an independent route to the paper's formula).
- For Gaussian data x ~ N(0, s^2 I) the TrigFlow probability-flow velocity is exactly
  dx/dtau = x_tau cos tau sin tau (sigma_d^2 - s^2) / (cos^2 tau s^2 + sin^2 tau sigma_d^2); sCD's teacher
  conversion of the exact linear-flow velocity must reproduce it.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import described_teachers, perturbed_params
from fewstep_jax import paths, sampling
from fewstep_jax.config_base import base_config
from fewstep_jax.inputs import Teacher
from fewstep_jax.methods import build_method

S = 0.7          # Gaussian data std in the analytic checks.
SIGMA_D = 0.5


def make(name='sct', num_classes=0, teacher=None, **hparams):
  """The method on a small MLP; sCD gets `teacher` (a Teacher), or a description of one if not given."""
  config = base_config(method=name, network='mlp', dataset='toy')
  config.network.update(hidden=32, depth=2, time_scale=10.0, logvar_head=True)
  config.method.update(hparams)
  inputs = described_teachers(config, (2,), num_classes)
  if teacher is not None:
    inputs['teacher'] = teacher
  return build_method(config, data_shape=(2,), num_classes=num_classes, inputs=inputs)


def batch(n=16, seed=2):
  keys = jax.random.split(jax.random.PRNGKey(seed), 3)
  x = S * jax.random.normal(keys[0], (n, 2))
  z = SIGMA_D * jax.random.normal(keys[1], (n, 2))
  tau = jax.random.uniform(keys[2], (n,), minval=0.1, maxval=1.4)
  return x, z, tau


def on_the_path(parameterization='trigflow'):
  """An sCT method, perturbed parameters, and (x, z, tau, x_tau, dx_tau/dtau) of a batch on the sCT path."""
  method = make(parameterization=parameterization)
  params = perturbed_params(method)
  x, z, tau = batch()
  x_tau = method.path.noisy(x, z / SIGMA_D, tau)
  return method, params, (x, z, tau, x_tau, method.path_velocity(None, x, z, x_tau, tau, None))


def test_boundary_condition_is_exact():
  method = make()
  params = perturbed_params(method)
  x, _, _ = batch()
  np.testing.assert_array_equal(method.consistency_fn(params, x, jnp.zeros(x.shape[0])), x)


@pytest.mark.parametrize('parameterization', ['trigflow', 'edm'])
def test_tangent_is_a_finite_difference_of_the_network_along_the_path(parameterization):
  # The network computes in float32, so h cannot be tiny: Richardson's combination of central differences at
  # h and h / 2 cancels the O(h^2) truncation term, leaving O(h^4) and rounding of about 1e-7 / h.
  method, params, (x, z, tau, x_tau, dx) = on_the_path(parameterization)
  _, _, g0 = method.prediction_and_g(params, x_tau, tau, dx, None, w=0.0)
  _, _, g1 = method.prediction_and_g(params, x_tau, tau, dx, None, w=1.0)
  # g(w=1) - g(w=0) = -(cos sin x_tau + sigma_d J): recover J.
  cs = (jnp.cos(tau) * jnp.sin(tau))[:, None]
  J = -((g1 - g0) + cs * x_tau) / SIGMA_D
  h = 1e-2
  along = lambda d: method.F_only(params, jnp.cos(tau + d)[:, None] * x + jnp.sin(tau + d)[:, None] * z,
                                  tau + d)
  central = lambda h: (along(h) - along(-h)) / (2 * h)
  finite_difference = cs * (4 * central(h / 2) - central(h)) / 3
  np.testing.assert_allclose(J, finite_difference, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize('parameterization', ['trigflow', 'edm'])
def test_g_is_cos_tau_times_the_total_derivative_of_f_along_the_path(parameterization):
  method, params, (x, z, tau, x_tau, dx) = on_the_path(parameterization)
  _, _, g = method.prediction_and_g(params, x_tau, tau, dx, None, w=1.0)

  def f_along(t):
    x_t = jnp.cos(t)[:, None] * x + jnp.sin(t)[:, None] * z
    return method.consistency_fn(params, x_t, t)

  _, df_dtau = jax.jvp(f_along, (tau,), (jnp.ones_like(tau),))
  np.testing.assert_allclose(g, jnp.cos(tau)[:, None] * df_dtau, rtol=1e-4, atol=1e-6)


def test_scd_converts_an_exact_teacher_to_the_exact_trigflow_velocity():
  def gaussian_velocity(params, z, t, r=None, y=None, key=None):
    """The exact linear-flow velocity of N(0, S^2 I) data, as a raw network read as a velocity."""
    t = t[:, None]
    return z * (t - (1 - t) * S**2) / ((1 - t) ** 2 * S**2 + t**2)

  teacher = Teacher(network=None, readout=paths.readout('flow'), data_shape=(2,), num_classes=0,
                    apply=gaussian_velocity)
  method = make('scd', teacher=teacher)
  x, z, tau = batch(64)
  x_tau = method.path.noisy(x, z / SIGMA_D, tau)
  velocity = method.path_velocity({'teacher': None}, x, z, x_tau, tau, None)
  c, s = jnp.cos(tau)[:, None], jnp.sin(tau)[:, None]
  exact = x_tau * c * s * (SIGMA_D**2 - S**2) / (c**2 * S**2 + s**2 * SIGMA_D**2)
  np.testing.assert_allclose(velocity, exact, rtol=1e-4, atol=1e-6)


def test_an_edm_student_is_its_denoiser_read_as_trigflow():
  """parameterization='edm': F is EDM's denoiser of the same raw network converted by paths.reparameterize (an
  independent route through the generic conversions), the consistency function f(x_tau, tau) is that denoiser at
  sigma = sigma_d tan tau (so a student that starts from an EDM teacher starts as the teacher's denoiser), the
  log-variance is the network's own, and sampling starts at tau(sigma_max)."""
  method = make(parameterization='edm')
  params = perturbed_params(method)
  x, z, tau = batch()
  tau = tau.at[0].set(1.5645)  # tau(80): the sampler's first angle.
  x_tau = method.path.noisy(x, z / SIGMA_D, tau)
  raw_output = lambda p, x, t, r=None, y=None, key=None: method.apply(p, x, t, r, y, key)[0]
  denoiser = paths.edm_denoiser(raw_output, SIGMA_D)
  expected_F = paths.reparameterize(denoiser, paths.EDMPath(), 'x0', paths.TrigFlowPath(SIGMA_D), 'F')
  F, logvar = method.F(params, x_tau, tau)
  np.testing.assert_allclose(F, expected_F(params, x_tau, tau), rtol=1e-5, atol=1e-5)
  sigma = SIGMA_D * jnp.tan(tau)
  np.testing.assert_allclose(method.consistency_fn(params, x_tau, tau),
                             denoiser(params, x_tau / jnp.cos(tau)[:, None], sigma), rtol=1e-4, atol=1e-5)
  _, c_noise = paths.edm_network_input(x_tau / jnp.cos(tau)[:, None], sigma, SIGMA_D)
  np.testing.assert_allclose(logvar, method.apply(params, x_tau, c_noise)[1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(method.sampler.schedule(2), [np.arctan(80 / SIGMA_D), 1.1], rtol=1e-6)
  assert method.readout.name == 'edm'


def test_scd_without_a_teacher_is_a_clear_error():
  from fewstep_jax import runs
  config = base_config(method='scd', network='mlp', dataset='toy')
  with pytest.raises(ValueError, match='set --config.method.teacher=WORKDIR'):
    build_method(config, data_shape=(2,), num_classes=0)
  with pytest.raises(ValueError, match='set --config.method.teacher=WORKDIR'):
    runs.resolve_inputs(config, (2,), 0)
  config.method.teacher = '/nonexistent/run'
  with pytest.raises(FileNotFoundError, match='is not a trained fewstep_jax run'):
    runs.resolve_inputs(config, (2,), 0)


@pytest.mark.parametrize('nfe, guidance, calls', [(1, 1.0, 1), (2, 1.0, 2), (4, 1.0, 4), (4, 2.0, 4)])
def test_samplers_make_the_documented_number_of_network_calls(nfe, guidance, calls):
  method = make(num_classes=3 if guidance != 1.0 else 0)
  params = method.init(jax.random.PRNGKey(0)).nets['student'].params
  count = []
  apply = method.apply
  method.apply = lambda *args, **kwargs: count.append(1) or apply(*args, **kwargs)
  method.F = paths.trigflow_F(method.apply, sigma_data=SIGMA_D)
  labels = jnp.arange(5) % 3 if guidance != 1.0 else None
  out = method.sample_at(params, jax.random.PRNGKey(1), 5, nfe, labels=labels, guidance=guidance)
  assert out.shape == (5, 2) and len(count) == calls


def test_sample_schedule():
  method = make()
  assert method.sampler.schedule(1) == [np.pi / 2]
  assert method.sampler.schedule(2) == [np.pi / 2, 1.1]
  np.testing.assert_allclose(method.sampler.schedule(4), [np.pi / 2, 1.1, 1.1 * 2 / 3, 1.1 / 3])


@pytest.mark.parametrize('gamma', [0.0, 0.5, 1.0])
@pytest.mark.parametrize('path', [paths.TrigFlowPath(SIGMA_D), paths.EDMPath()],
                         ids=['trigflow', 'edm'])
def test_consistency_sampler_keeps_the_path_marginals(path, gamma):
  """Point-mass data c with its exact x0 predictor: every intermediate state must be N(alpha_t c, beta_t^2)."""
  c = 0.8
  times = [1.5, 1.0, 0.4] if path.name == 'trigflow' else [80.0, 2.0, 0.3]
  seen = []

  def x0_fn(x, t):
    seen.append(x)
    return jnp.full_like(x, c)

  n = 200_000
  x_start = path.noisy(jnp.full((n, 1), c), jax.random.normal(jax.random.PRNGKey(0), (n, 1)), times[0])
  out = sampling.consistency_sample(x0_fn, path, times, x_start, jax.random.PRNGKey(1), gamma)
  np.testing.assert_allclose(out, c)
  assert len(seen) == len(times)
  for x, t in zip(seen, times):
    alpha, beta, _, _ = path.coefficients(jnp.asarray(t))
    np.testing.assert_allclose(jnp.mean(x), alpha * c, atol=4 * beta / np.sqrt(n) + 1e-6)
    np.testing.assert_allclose(jnp.std(x), beta, rtol=0.01)


def test_training_steps_run_and_reduce_the_loss_on_a_fixed_batch():
  method = make(tangent_warmup_steps=1)
  state = method.init(jax.random.PRNGKey(0))
  data = {'x': S * jax.random.normal(jax.random.PRNGKey(1), (128, 2))}
  step = jax.jit(method.step)
  key = jax.random.PRNGKey(2)
  losses = []
  for _ in range(30):
    state, metrics = step(state, data, key)
    losses.append(float(metrics['loss']))
  assert np.isfinite(losses).all() and losses[-1] < losses[0]
  assert float(metrics['warmup']) == 1.0


def test_diffusion_only_keeps_the_tangent_term_off():
  assert float(make(diffusion_only=True, tangent_warmup_steps=10).tangent_warmup(10**6)) == 0.0
  assert float(make(tangent_warmup_steps=10).tangent_warmup(5)) == 0.5

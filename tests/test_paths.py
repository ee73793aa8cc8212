"""Time conversions, path rescalings and prediction conversions against closed forms."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fewstep_jax import paths

SD = paths.SIGMA_DATA
FLOW, EDM, TRIG = paths.LinearFlowPath(), paths.EDMPath(), paths.TrigFlowPath(SD)


def _close(actual, expected, rtol=1e-5, atol=1e-6):
  np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


def test_expand_to_broadcasts_per_example_times():
  x = jnp.zeros((3, 4, 5, 2))
  assert paths.expand_to(jnp.arange(3.0), x).shape == (3, 1, 1, 1)
  assert (paths.expand_to(0.5, x) * x).shape == x.shape


@pytest.mark.parametrize('use_x64', [False, True])
def test_time_conversion_round_trips(use_x64):
  with jax.enable_x64(use_x64):
    # float32: the well-conditioned directions hold to 1e-6; sigma from tau near pi/2 inherits tau's rounding
    # (relative 1e-7 / cos tau), so it is checked to 1e-4 there and to 1e-12 in float64.
    tight, loose = (1e-12, 1e-12) if use_x64 else (1e-6, 1e-4)
    t = jnp.array([0.0, 1e-4, 0.01, 0.3, 0.5, 0.77, 0.99, 0.999])
    sigma = paths.sigma_from_t(t)
    tau = paths.tau_from_t(t)
    _close(paths.t_from_sigma(sigma), t, rtol=tight, atol=tight)
    _close(paths.t_from_tau(tau), t, rtol=tight, atol=tight)
    _close(paths.tau_from_sigma(sigma), tau, rtol=tight, atol=tight)
    _close(paths.t_from_tau(paths.tau_from_sigma(paths.sigma_from_t(t))), t, rtol=tight, atol=tight)
    _close(paths.sigma_from_tau(tau), sigma, rtol=loose, atol=tight)
    _close(paths.sigma_from_t(paths.t_from_tau(tau)), sigma, rtol=loose, atol=tight)
    # The closed forms: sigma = t / (1 - t) and sigma = sigma_d tan(tau).
    _close(sigma * (1 - t), t, rtol=tight, atol=tight)
    _close(SD * jnp.tan(tau), sigma, rtol=loose, atol=tight)


def test_time_conversions_at_the_noise_end():
  half_pi = jnp.float32(np.pi / 2)
  assert float(paths.tau_from_t(1.0)) == pytest.approx(np.pi / 2, abs=1e-7)
  assert float(paths.t_from_tau(half_pi)) == pytest.approx(1.0, abs=1e-6)
  assert float(paths.sigma_from_t(1.0)) == np.inf
  assert float(paths.sigma_from_tau(half_pi)) == np.inf  # Not -2e7: float32(pi/2) is just above pi/2.
  assert float(paths.t_from_sigma(jnp.inf)) == 1.0
  assert float(paths.tau_from_sigma(jnp.inf)) == pytest.approx(np.pi / 2, abs=1e-7)


# (path, times, alpha(time), beta(time), true velocity E[dz/dtime | z] from E[x | z] and E[eps | z]), typed out from
# the path definitions so that they are independent of the path classes.
PATH_CASES = [
    (FLOW, [0.1, 0.5, 0.9], lambda t: 1 - t, lambda t: t, lambda t, ex, ee: ee - ex),
    (EDM, [0.05, 1.0, 20.0], np.ones_like, lambda s: s, lambda s, ex, ee: ee),
    (TRIG, [0.1, 0.8, 1.4], np.cos, lambda a: SD * np.sin(a),
     lambda a, ex, ee: np.cos(a) * SD * ee - np.sin(a) * ex),
]


@pytest.mark.parametrize('data_std', [0.0, 0.7])  # 0: a point mass.
@pytest.mark.parametrize('path, times, alpha_fn, beta_fn, velocity_fn', PATH_CASES, ids=['flow', 'edm', 'trigflow'])
def test_conversions_of_the_exact_gaussian_posterior(path, times, alpha_fn, beta_fn, velocity_fn, data_std):
  """Data x ~ N(mu, s^2 I): E[x | z], E[eps | z] and the marginal score are closed-form; every conversion of the exact
  x0 must give the exact eps / velocity / score / F, and back. In float64, where 'exact' means 1e-10."""
  rng = np.random.RandomState(0)
  mu = np.array([0.3, -1.0, 2.0])
  time = np.array(times)
  z = rng.randn(len(times), 3)
  alpha, beta = alpha_fn(time)[:, None], beta_fn(time)[:, None]
  variance = alpha**2 * data_std**2 + beta**2
  residual = z - alpha * mu
  expected_x0 = mu + alpha * data_std**2 / variance * residual
  expected_eps = beta / variance * residual

  def log_marginal(z_row, alpha_row, variance_row):
    return -0.5 * jnp.sum((z_row - alpha_row * mu)**2) / variance_row[0]

  with jax.enable_x64(True):
    expected_score = jax.vmap(jax.grad(log_marginal))(z, alpha, variance)
    expected_velocity = velocity_fn(time[:, None], expected_x0, expected_eps)
    expected = {'x0': expected_x0, 'eps': expected_eps, 'score': expected_score, 'velocity': expected_velocity}
    if path is TRIG:
      expected['F'] = expected_velocity / SD
    assert set(path.prediction_kinds) == set(expected)
    for kind, value in expected.items():
      _close(path.from_x0(kind, expected_x0, z, time), value, rtol=1e-10, atol=1e-10)
      _close(path.to_x0(kind, value, z, time), expected_x0, rtol=1e-10, atol=1e-10)


def test_named_trigflow_functions_are_the_scm_formulas():
  rng = np.random.RandomState(1)
  x_tau, F = rng.randn(2, 4, 3).astype(np.float32)
  tau = np.array([0.0, 0.3, 1.0, 1.5], np.float32)
  c, s = np.cos(tau)[:, None], np.sin(tau)[:, None]
  f = TRIG.x0_from_F(x_tau, F, tau)
  _close(f, c * x_tau - s * SD * F)
  _close(TRIG.F_from_x0(x_tau[1:], f[1:], tau[1:]), F[1:], rtol=1e-4, atol=1e-5)  # tau = 0 leaves F undetermined.


def test_flow_velocity_named_conversions():
  rng = np.random.RandomState(2)
  z, v = rng.randn(2, 3, 5).astype(np.float32)
  t = np.array([0.2, 0.5, 1.0], np.float32)
  _close(FLOW.x0_from_velocity(z, v, t), z - t[:, None] * v)  # The 1-NFE flow sample at t = 1: eps - v.


@pytest.mark.parametrize('path, time, closed_form', [
    (FLOW, [0.1, 0.5, 0.95], lambda time, x, eps: eps - x),
    (EDM, [0.1, 1.0, 10.0], lambda time, x, eps: eps),
    (TRIG, [0.1, 0.8, 1.5], lambda time, x, eps: np.cos(time) * SD * eps - np.sin(time) * x),
], ids=['flow', 'edm', 'trigflow'])
def test_conditional_velocity_is_the_time_derivative(path, time, closed_form):
  rng = np.random.RandomState(3)
  x, eps = rng.randn(2, 3, 4).astype(np.float32)
  time = np.array(time, np.float32)
  h = 1e-2
  finite_difference = (path.noisy(x, eps, time + h) - path.noisy(x, eps, time - h)) / (2 * h)
  velocity = path.velocity(x, eps, time)
  _close(velocity, finite_difference, rtol=1e-3, atol=1e-4)
  _close(velocity, closed_form(time[:, None], x, eps))
  if path is TRIG:  # d x_tau / d tau = sigma_d F for F's conditional target (cos tau z - sin tau x) / sigma_d.
    _close(velocity, SD * TRIG.F_from_x0(path.noisy(x, eps, time), x, time), rtol=1e-4, atol=1e-5)


def test_three_paths_give_one_point_cloud():
  """At matched times the flow, EDM and TrigFlow samples of the same (x, eps) are rescalings of one another."""
  rng = np.random.RandomState(4)
  x, eps = rng.randn(2, 5, 2, 2, 1).astype(np.float32)
  t = np.array([0.0, 0.05, 0.4, 0.8, 0.99], np.float32)
  sigma, tau = paths.sigma_from_t(t), paths.tau_from_t(t)
  samples = {FLOW: (FLOW.noisy(x, eps, t), t), EDM: (EDM.noisy(x, eps, sigma), sigma),
             TRIG: (TRIG.noisy(x, eps, tau), tau)}
  for src, (z_src, time_src) in samples.items():
    for dst, (z_dst, time_dst) in samples.items():
      converted, converted_time = paths.change_path(z_src, time_src, src, dst)
      _close(converted_time, time_dst, rtol=5e-5, atol=1e-7)  # sigma from tau near pi/2: see sigma_from_tau.
      _close(converted, z_dst, rtol=1e-5, atol=1e-5)
  x_sigma = samples[EDM][0]
  _close(samples[FLOW][0], (1 - t)[:, None, None, None] * x_sigma, atol=1e-5)
  _close(samples[TRIG][0], np.cos(tau)[:, None, None, None] * x_sigma, atol=1e-5)


def test_change_path_is_finite_at_pure_noise():
  eps = np.random.RandomState(5).randn(2, 3).astype(np.float32)
  x_tau, tau = paths.change_path(eps, jnp.ones(2), FLOW, TRIG)
  _close(tau, [np.pi / 2] * 2)
  _close(x_tau, SD * eps)


def _recording_raw(output_fn):
  """A raw network that returns output_fn(x, c_noise) and records its inputs."""
  calls = []

  def raw(params, x, c_noise, r, y, key):
    calls.append(dict(x=x, c_noise=c_noise, r=r, y=y, key=key))
    return output_fn(x, c_noise)

  return raw, calls


def test_edm_coefficients_are_edm_and_unit_variance():
  sigma = jnp.array([0.002, 0.1, 0.5, 3.0, 80.0])
  c_skip, c_out, c_in = paths.edm_coefficients(sigma, SD)
  _close(c_skip, SD**2 / (sigma**2 + SD**2))
  _close(c_in**2 * (sigma**2 + SD**2), np.ones(5))
  # c_out is the standard deviation of the effective target (x - c_skip x_sigma) / c_out when x has std sigma_d.
  _close(c_out**2, (1 - c_skip)**2 * SD**2 + c_skip**2 * sigma**2)


def test_edm_denoiser_wraps_raw_network():
  x = np.random.RandomState(6).randn(3, 4, 4, 1).astype(np.float32)
  raw, calls = _recording_raw(lambda x, c_noise: jnp.tanh(x) + paths.expand_to(c_noise, x))
  denoise = paths.edm_denoiser(raw, SD)
  # sigma -> 0: c_skip -> 1 and c_out -> 0, so D is the identity however the network behaves.
  _close(denoise(None, x, 1e-6), x, atol=1e-5)
  sigma = jnp.array([0.1, 1.0, 10.0])
  out = denoise(None, x, sigma, r=jnp.array([0.05, 0.5, 5.0]), y='label', key='key')
  call = calls[-1]
  _close(call['x'], x / np.sqrt(sigma**2 + SD**2)[:, None, None, None])
  _close(call['c_noise'], np.log(sigma) / 4)
  _close(call['r'], np.log([0.05, 0.5, 5.0]) / 4)
  assert (call['y'], call['key']) == ('label', 'key')
  c_skip, c_out, _ = paths.edm_coefficients(sigma, SD)
  _close(out, paths.expand_to(c_skip, x) * x + paths.expand_to(c_out, x) * (jnp.tanh(call['x']) +
                                                                             paths.expand_to(call['c_noise'], x)))
  assert calls[0]['c_noise'].shape == (3,)  # A scalar sigma reaches the network as one time per example.


def test_edm_denoiser_with_zero_network_is_the_posterior_mean_of_gaussian_data():
  """For x ~ N(0, sigma_d^2 I), E[x | x_sigma] = sigma_d^2 / (sigma^2 + sigma_d^2) x_sigma = c_skip x_sigma."""
  x_sigma = np.random.RandomState(7).randn(4, 3).astype(np.float32)
  sigma = jnp.array([0.01, 0.3, 2.0, 50.0])
  denoise = paths.edm_denoiser(lambda params, x, c_noise, r, y, key: jnp.zeros_like(x), SD)
  _close(denoise(None, x_sigma, sigma), (SD**2 / (sigma**2 + SD**2))[:, None] * x_sigma)


def test_consistency_boundary_shift_is_exact_at_sigma_min():
  x = np.random.RandomState(8).randn(2, 5).astype(np.float32)
  raw = lambda params, x, c_noise, r, y, key: 100.0 + x
  denoise = paths.edm_denoiser(raw, SD, sigma_min=0.002)
  np.testing.assert_array_equal(np.asarray(denoise(None, x, 0.002)), x)
  c_skip, c_out, _ = paths.edm_coefficients(jnp.array(1.0), SD, sigma_min=0.002)
  _close([c_skip, c_out], [SD**2 / (0.998**2 + SD**2), SD * 0.998 / np.sqrt(1 + SD**2)])


def test_trigflow_and_flow_wrappers_feed_the_network_its_inputs():
  x = np.random.RandomState(9).randn(2, 3).astype(np.float32)
  raw, calls = _recording_raw(lambda x, c_noise: 2.0 * x)
  F = paths.trigflow_F(raw, SD)
  _close(F(None, x, 0.7, r=0.2), 2.0 * x / SD)
  _close(calls[-1]['c_noise'], [0.7, 0.7])
  _close(calls[-1]['r'], [0.2, 0.2])
  velocity = paths.flow_velocity(raw)
  _close(velocity(None, x, jnp.array([0.3, 0.6])), 2.0 * x)
  _close(calls[-1]['x'], x)
  _close(calls[-1]['c_noise'], [0.3, 0.6])
  assert calls[-1]['r'] is None
  # SiT's network sees its own time 1 - t and predicts x - eps = -v.
  velocity = paths.sit_velocity(raw)
  _close(velocity(None, x, jnp.array([0.3, 0.6])), -2.0 * x)
  _close(calls[-1]['c_noise'], [0.7, 0.4])
  # DiT sees the variance-preserving sample at the DDPM timestep of sigma (interpolated in log sigma).
  sigmas = paths.ddpm_linear_sigmas()
  eps = paths.dit_eps(raw)
  _close(eps(None, x, jnp.array([sigmas[10], np.sqrt(sigmas[500] * sigmas[501])])),
         2.0 * x / np.sqrt(1 + np.array([sigmas[10] ** 2, sigmas[500] * sigmas[501]]))[:, None], rtol=1e-5)
  _close(calls[-1]['c_noise'], [10.0, 500.5], rtol=1e-4)
  assert set(paths.PRECONDITIONINGS) == {'edm', 'trigflow', 'flow', 'sit', 'dit', 'sd', 'sd_v'}


def _gaussian_denoiser(mu, data_std):
  """The exact EDM denoiser E[x | x_sigma] for x ~ N(mu, data_std^2 I), with the model signature."""

  def denoise(params, x_sigma, sigma, r=None, y=None, key=None):
    sigma = paths.expand_to(sigma, x_sigma)
    return mu + data_std**2 / (data_std**2 + sigma**2) * (x_sigma - mu)

  return denoise


def test_reparameterize_turns_the_exact_denoiser_into_the_exact_flow_velocity_and_trigflow_F():
  mu, data_std = np.float32(0.4), 0.6
  denoiser = _gaussian_denoiser(mu, data_std)
  rng = np.random.RandomState(10)
  z = rng.randn(3, 4).astype(np.float32)
  t = np.array([0.2, 0.5, 0.9], np.float32)[:, None]
  variance = (1 - t)**2 * data_std**2 + t**2
  # Flow: E[eps - x | z_t] with the Gaussian posterior.
  expected_x0 = mu + (1 - t) * data_std**2 / variance * (z - (1 - t) * mu)
  expected_v = t / variance * (z - (1 - t) * mu) - expected_x0
  as_velocity = paths.reparameterize(denoiser, EDM, 'x0', FLOW, 'velocity')
  _close(as_velocity(None, z, t[:, 0]), expected_v, rtol=1e-5, atol=1e-5)
  # TrigFlow: F = (cos tau E[z] - sin tau E[x]) / sigma_d at x_tau = the same sample rescaled.
  x_tau, tau = paths.change_path(z, t[:, 0], FLOW, TRIG)
  expected_F = (np.cos(tau)[:, None] * SD * (t / variance * (z - (1 - t) * mu)) -
                np.sin(tau)[:, None] * expected_x0) / SD
  as_F = paths.reparameterize(denoiser, EDM, 'x0', TRIG, 'F')
  _close(as_F(None, x_tau, tau), expected_F, rtol=1e-5, atol=1e-5)
  # And back: the TrigFlow F model re-expressed as an EDM denoiser is the denoiser again.
  back = paths.reparameterize(as_F, TRIG, 'F', EDM, 'x0')
  x_sigma = z * 3.0
  sigma = jnp.array([0.1, 1.0, 5.0])
  _close(back(None, x_sigma, sigma), denoiser(None, x_sigma, sigma), rtol=1e-4, atol=1e-5)


def test_unknown_names_fail_clearly():
  with pytest.raises(ValueError, match="no prediction kind 'F'"):
    paths.reparameterize(None, EDM, 'F', FLOW, 'x0')
  with pytest.raises(ValueError, match='unknown path'):
    paths.make_path('vp')
  assert paths.make_path('trigflow', sigma_data=1.0) == paths.TrigFlowPath(1.0)

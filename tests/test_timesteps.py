"""Time samplers and grids against their formulas and large-sample statistics."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from fewstep_jax import timesteps

N_LARGE = 200_000  # Standard errors ~ 1 / sqrt(N) = 0.0022: the tolerances below are >= 4 of them.


def test_karras_grid_endpoints_monotonicity_and_formula():
  sigmas = np.asarray(timesteps.karras_sigmas(18))
  assert sigmas.shape == (18,)
  np.testing.assert_allclose([sigmas[0], sigmas[-1]], [80.0, 0.002], rtol=1e-5)
  assert np.all(np.diff(sigmas) < 0)
  i, rho = 7, 7.0
  expected = (80.0**(1 / rho) + i / 17 * (0.002**(1 / rho) - 80.0**(1 / rho)))**rho
  np.testing.assert_allclose(sigmas[i], expected, rtol=1e-5)
  ascending = np.asarray(timesteps.karras_sigmas(18, ascending=True))
  np.testing.assert_allclose(ascending, sigmas[::-1], rtol=1e-5)
  n = 4  # The ascending Karras form, written independently.
  np.testing.assert_allclose(ascending[n],
                             (0.002**(1 / rho) + n / 17 * (80.0**(1 / rho) - 0.002**(1 / rho)))**rho, rtol=1e-5)


def test_karras_sigma_at_accepts_a_traced_grid_size():
  at = jax.jit(lambda index, num: timesteps.karras_sigma_at(index, num, ascending=True))
  for num in (11, 21):
    np.testing.assert_allclose(at(jnp.arange(num), num), timesteps.karras_sigmas(num, ascending=True), rtol=1e-6)


def test_flow_time_grid_runs_from_noise_to_data():
  np.testing.assert_allclose(timesteps.flow_time_grid(4), [1.0, 0.75, 0.5, 0.25, 0.0])


def test_uniform_range():
  t = np.asarray(timesteps.sample_uniform(jax.random.key(0), N_LARGE, 0.2, 0.6))
  assert t.min() >= 0.2 and t.max() < 0.6
  assert abs(t.mean() - 0.4) < 0.002


def test_logit_normal_median_and_underlying_moments():
  mean, std = -0.4, 1.3
  t = np.asarray(timesteps.sample_logit_normal(jax.random.key(1), N_LARGE, mean, std))
  assert np.all((t > 0) & (t < 1))
  assert abs(np.median(t) - special.expit(mean)) < 0.005
  logits = special.logit(t.astype(np.float64))
  assert abs(logits.mean() - mean) < 0.015
  assert abs(logits.std() - std) < 0.015


def test_u_shaped_matches_its_cdf():
  a = 4.0
  t = np.asarray(timesteps.sample_u_shaped(jax.random.key(3), N_LARGE, a))
  assert np.all((t >= 0) & (t <= 1))
  # CDF of p(t) = a (e^(a t) + e^(a (1 - t))) / (2 (e^a - 1)), integrated by hand.
  cdf = lambda x: ((np.exp(a * x) - 1) + (np.exp(a) - np.exp(a * (1 - x)))) / (2 * (np.exp(a) - 1))
  assert stats.kstest(t, cdf).statistic < 0.005
  assert np.mean(t < 0.1) > 3 * np.mean(np.abs(t - 0.5) < 0.05)  # U-shaped: ends heavier than the middle.


def test_log_normal_moments():
  sigma = np.asarray(timesteps.sample_log_normal(jax.random.key(2), N_LARGE, -1.2, 1.2))
  assert abs(np.log(sigma).mean() + 1.2) < 0.015
  assert abs(np.log(sigma).std() - 1.2) < 0.015


def test_samplers_return_one_time_per_example():
  key = jax.random.key(3)
  for sampler, kwargs in [(timesteps.sample_uniform, {}), (timesteps.sample_logit_normal, dict(mean=0.0, std=1.0)),
                          (timesteps.sample_log_normal, dict(p_mean=-1.1, p_std=2.0))]:
    assert sampler(key, 5, **kwargs).shape == (5,)
  r, t = timesteps.sample_ordered_pair(key, 5, -0.4, 1.0)
  assert r.shape == t.shape == (5,) and np.all(np.asarray(r) <= np.asarray(t))


def test_lognormal_index_probs_match_binned_log_normal():
  p_mean, p_std = -1.1, 2.0
  sigmas = np.asarray(timesteps.karras_sigmas(11, ascending=True))
  probs = np.asarray(timesteps.lognormal_index_probs(sigmas, p_mean, p_std))
  assert probs.shape == (10,)
  np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-6)
  # Independent reference: the normal CDF of ln sigma, as a Monte-Carlo histogram restricted to the grid.
  log_sigma = np.log(np.asarray(timesteps.sample_log_normal(jax.random.key(4), N_LARGE, p_mean, p_std)))
  counts, _ = np.histogram(log_sigma, bins=np.log(sigmas))
  np.testing.assert_allclose(probs, counts / counts.sum(), atol=0.005)
  cdf = stats.norm.cdf(np.log(sigmas), p_mean, p_std)
  np.testing.assert_allclose(probs, np.diff(cdf) / (cdf[-1] - cdf[0]), rtol=1e-4, atol=1e-7)


def test_lognormal_index_probs_masks_a_grid_held_in_a_larger_buffer():
  small = timesteps.karras_sigmas(6, ascending=True)
  buffer = timesteps.karras_sigma_at(jnp.arange(11), 6, ascending=True)
  probs = jax.jit(lambda s, num: timesteps.lognormal_index_probs(s, -1.1, 2.0, num))(buffer, 6)
  np.testing.assert_allclose(probs[:5], timesteps.lognormal_index_probs(small, -1.1, 2.0), rtol=1e-5)
  np.testing.assert_array_equal(probs[5:], 0.0)


@pytest.mark.parametrize('probs', [[0.1, 0.0, 0.6, 0.3], [0.25] * 4])
def test_discrete_index_frequencies(probs):
  index = np.asarray(timesteps.sample_discrete_index(jax.random.key(5), N_LARGE, jnp.array(probs)))
  assert index.dtype == np.int32
  frequencies = np.bincount(index, minlength=4) / N_LARGE
  np.testing.assert_allclose(frequencies, probs, atol=0.005)
  assert frequencies[np.array(probs) == 0].sum() == 0

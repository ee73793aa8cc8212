"""Time and noise-level samplers and discretisations: pure jnp functions, jittable, no Python-side state.

Conventions (METHODS.md §0): flow time t in [0, 1] with t = 0 data; EDM sigma. Samplers return float32 [n]
vectors (int32 for indices). Grids that a count `num` defines accept a traced `num` where noted, so that a
curriculum N(k) can change inside one jitted step.
"""
import jax
import jax.numpy as jnp
from jax.scipy.special import erf


def sample_uniform(key, n: int, lo=0.0, hi=1.0):
  """[n] times uniform in [lo, hi)."""
  return jax.random.uniform(key, (n,), minval=lo, maxval=hi)


def sample_logit_normal(key, n: int, mean, std):
  """[n] flow times t = sigmoid(u), u ~ N(mean, std^2): median sigmoid(mean), never exactly 0 or 1."""
  return jax.nn.sigmoid(mean + std * jax.random.normal(key, (n,)))


def sample_log_normal(key, n: int, p_mean, p_std):
  """[n] EDM noise levels sigma = exp(u), u ~ N(p_mean, p_std^2) (EDM training: p_mean = -1.2, p_std = 1.2)."""
  return jnp.exp(p_mean + p_std * jax.random.normal(key, (n,)))


def sample_u_shaped(key, n: int, a=4.0):
  """[n] flow times from 2-RF++'s U-shaped density p(t) = a (e^(a t) + e^(a (1 - t))) / (2 (e^a - 1)) on
  [0, 1]: an exponential density drawn by its inverse CDF t = ln(1 + u (e^a - 1)) / a, mirrored to 1 - t with
  probability 1/2 (Lee et al. 2024, a = 4). Most mass lies near both ends."""
  u_key, flip_key = jax.random.split(key)
  t = jnp.log1p(jax.random.uniform(u_key, (n,)) * jnp.expm1(a)) / a
  return jnp.where(jax.random.bernoulli(flip_key, 0.5, (n,)), 1.0 - t, t)


TIME_SAMPLERS = {
    'uniform': sample_uniform,
    'logit_normal': sample_logit_normal,
    'log_normal': sample_log_normal,
    'u_shaped': sample_u_shaped,
}


def karras_sigma_at(index, num, sigma_min=0.002, sigma_max=80.0, rho=7.0, ascending=False):
  """Entry `index` of the num-point Karras grid; index and num may be traced (curricula).

  Descending (samplers): sigma_i = (sigma_max^(1/rho) + i/(num-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
  so sigma_0 = sigma_max. Ascending (consistency losses): sigma_min and sigma_max swap, so sigma_{n+1} > sigma_n.
  """
  start, end = (sigma_min, sigma_max) if ascending else (sigma_max, sigma_min)
  # A one-point grid is {start} (a 1-step sampler), not 0/0.
  fraction = jnp.asarray(index, jnp.result_type(float)) / jnp.maximum(
      jnp.asarray(num, jnp.result_type(float)) - 1.0, 1.0)
  return (start**(1.0 / rho) + fraction * (end**(1.0 / rho) - start**(1.0 / rho)))**rho


def karras_sigmas(num: int, sigma_min=0.002, sigma_max=80.0, rho=7.0, ascending=False):
  """The num-point Karras grid [num]: descending from sigma_max (samplers) or, with ascending=True, rising from
  sigma_min (consistency losses, which index it by n with sigma_{n+1} > sigma_n)."""
  return karras_sigma_at(jnp.arange(num), num, sigma_min, sigma_max, rho, ascending)


def flow_time_grid(num_steps: int):
  """[num_steps + 1] flow times from 1 (noise) down to 0 (data), evenly spaced: the Euler / Heun grid."""
  return jnp.linspace(1.0, 0.0, num_steps + 1)


def sample_discrete_index(key, n: int, probs):
  """[n] int32 indices drawn from the categorical distribution probs: [K] (non-negative, summing to 1)."""
  return jax.random.categorical(key, jnp.log(probs), shape=(n,)).astype(jnp.int32)


def lognormal_index_probs(sigmas_ascending, p_mean, p_std, num_sigmas=None):
  """iCT's distribution over the intervals of an ascending grid: p(n) for n = 0..K-2, shape [K - 1].

  p(n) ∝ erf((ln sigma_{n+1} - p_mean) / (sqrt2 p_std)) - erf((ln sigma_n - p_mean) / (sqrt2 p_std)): the
  probability that ln sigma ~ N(p_mean, p_std^2) falls in [sigma_n, sigma_{n+1}), renormalised over the grid.
  sigmas_ascending: [K]. num_sigmas (may be traced): if given, only the first num_sigmas entries form the grid
  and intervals beyond it get probability 0, so a fixed-size [K] buffer can hold a curriculum's growing grid.
  """
  cdf = erf((jnp.log(sigmas_ascending) - p_mean) / (jnp.sqrt(2.0) * p_std))
  mass = cdf[1:] - cdf[:-1]
  if num_sigmas is not None:
    mass = jnp.where(jnp.arange(mass.shape[0]) < num_sigmas - 1, mass, 0.0)
  return mass / jnp.sum(mass)

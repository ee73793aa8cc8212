"""Time and noise-level samplers and discretisations: pure jnp functions, jittable, no Python-side state (one
host-side table builder, `truncated_student_t_quantiles`, whose table a sampler then reads).

Conventions (paths.py): flow time t in [0, 1] with t = 0 data; EDM sigma. Samplers return float32 [n]
vectors (int32 for indices). Grids that a count `num` defines accept a traced `num` where noted, so that a
curriculum N(k) can change inside one jitted step.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
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


def sample_ordered_pair(key, n: int, mean, std):
  """(r, t) [n] each with r <= t: two independent logit-normal(mean, std) times, sorted (MeanFlow's sample_tr)."""
  pair = sample_logit_normal(key, 2 * n, mean, std).reshape(2, n)
  return jnp.min(pair, axis=0), jnp.max(pair, axis=0)


def karras_map(fraction, sigma_min=0.002, sigma_max=80.0, rho=7.0):
  """The Karras map of a fraction u in [0, 1] (traced) counted from sigma_min upward:
  (sigma_min^(1/rho) + u (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho, so u = 0 is sigma_min and u = 1 sigma_max."""
  return (sigma_min**(1.0 / rho) + fraction * (sigma_max**(1.0 / rho) - sigma_min**(1.0 / rho)))**rho


def karras_sigma_at(index, num, sigma_min=0.002, sigma_max=80.0, rho=7.0, ascending=False):
  """Entry `index` of the num-point Karras grid; index and num may be traced (curricula).

  Descending (samplers): sigma_i = (sigma_max^(1/rho) + i/(num-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
  so sigma_0 = sigma_max. Ascending (consistency losses): sigma_min and sigma_max swap, so sigma_{n+1} > sigma_n.
  """
  # A one-point grid is {start} (a 1-step sampler), not 0/0.
  fraction = jnp.asarray(index, jnp.result_type(float)) / jnp.maximum(
      jnp.asarray(num, jnp.result_type(float)) - 1.0, 1.0)
  if ascending:
    return karras_map(fraction, sigma_min, sigma_max, rho)
  return (sigma_max**(1.0 / rho) + fraction * (sigma_min**(1.0 / rho) - sigma_max**(1.0 / rho)))**rho


def karras_sigmas(num: int, sigma_min=0.002, sigma_max=80.0, rho=7.0, ascending=False):
  """The num-point Karras grid [num]: descending from sigma_max (samplers) or, with ascending=True, rising from
  sigma_min (consistency losses, which index it by n with sigma_{n+1} > sigma_n)."""
  return karras_sigma_at(jnp.arange(num), num, sigma_min, sigma_max, rho, ascending)


def leading_timesteps(num_steps: int, train_steps: int = 1000, offset: int = 1):
  """int [num_steps] DDPM timesteps, descending, spaced as diffusers' timestep_spacing='leading' spaces them (SD's and
  SDXL's scheduler configs, steps_offset 1): (train_steps // num_steps) * i + offset for i = num_steps - 1 .. 0, so 50
  steps of 1000 are 981, 961, ..., 1."""
  ratio = train_steps // num_steps
  if ratio < 1:
    raise ValueError(f'{num_steps} sampling steps do not fit {train_steps} training timesteps')
  return np.minimum(np.arange(num_steps - 1, -1, -1) * ratio + offset, train_steps - 1)


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


# Consistency-training curricula. `step` may be traced; each returns int32 / float32 scalars.

def cm_num_scales(step, total_steps: int, s0=2, s1=150):
  """CM's discretisation curriculum N(k) = ceil(sqrt(k/K ((s1 + 1)^2 - s0^2) + s0^2) - 1) + 1, K = total_steps:
  from s0 grid points at step 0 to s1 + 1 at the end."""
  fraction = jnp.asarray(step, jnp.float32) / max(total_steps, 1)
  inside = fraction * ((s1 + 1) ** 2 - s0**2) + s0**2
  return (jnp.ceil(jnp.sqrt(inside) - 1.0) + 1.0).astype(jnp.int32)


def cm_target_ema_rate(num_scales, s0=2, mu0=0.9, divisor_offset=0):
  """CM's target-network EMA rate mu(k) = exp(s0 ln(mu0) / (N(k) - divisor_offset)).

  divisor_offset = 0 is the paper's form (mu = mu0 at N = s0); 1 is the official JAX code's (mu = mu0^2 = 0.81 at
  N = s0 = 2)."""
  return jnp.exp(s0 * jnp.log(mu0) / (jnp.asarray(num_scales, jnp.float32) - divisor_offset))


def ict_num_scales(step, total_steps: int, s0=10, s1=1280):
  """iCT's doubling curriculum N(k) = min(s0 2^floor(k / K'), s1) + 1 with K' = floor(K / (log2 floor(s1/s0) + 1)):
  the grid doubles log2(s1/s0) times, in equal stages, from s0 + 1 to s1 + 1 points."""
  stage_steps = max(math.floor(total_steps / (math.log2(math.floor(s1 / s0)) + 1)), 1)
  doublings = jnp.asarray(step, jnp.int32) // stage_steps
  # Past the last doubling the grid stays at s1 + 1; capping the exponent there keeps s0 2^k inside int32.
  doublings = jnp.minimum(doublings, math.ceil(math.log2(max(s1 / s0, 1))))
  return (jnp.minimum(s0 * 2**doublings, s1) + 1).astype(jnp.int32)


def log_linear_num_scales(step, anneal_steps: int, s0=64, s1=1280):
  """Multistep CM's teacher-step curriculum (Heek et al. 2024, App. A.1): N(k) - 1 = round(exp(ln s0 +
  clip(k / anneal_steps, 0, 1) (ln s1 - ln s0))) intervals, so N(k) grid points (traced int32)."""
  fraction = jnp.clip(jnp.asarray(step, jnp.float32) / max(anneal_steps, 1), 0.0, 1.0)
  return jnp.round(jnp.exp(math.log(s0) + fraction * (math.log(s1) - math.log(s0)))).astype(jnp.int32) + 1


def ect_r_from_t(t, stage, q=2.0, k=8.0, b=1.0):
  """ECT's second point r = max(0, t (1 - q^-(stage + 1) (1 + k sigmoid(-b t)))) for EDM noise levels t [B]:
  r < t, the gap t - r shrinks by q each stage (continuous time in the limit), and small t map to r = 0."""
  return ect_r_at_gap(t, q ** (-(jnp.asarray(stage, jnp.float32) + 1.0)), k, b)


def ect_r_at_gap(t, gap, k=8.0, b=1.0):
  """ECT's r = max(0, t (1 - gap (1 + k sigmoid(-b t)))) at a given gap = q^-(stage + 1) (TCM holds it fixed)."""
  return jnp.maximum(0.0, t * (1.0 - gap * (1.0 + k * jax.nn.sigmoid(-b * t))))


def truncated_student_t_quantiles(df: float, loc: float, scale: float, lo: float, hi: float, num: int = 4097):
  """The quantile function of a Student-t(df, loc, scale) truncated to [lo, hi], tabulated on the host at `num`
  evenly spaced probabilities (float64 scipy; for `sample_from_quantiles`). TCM draws ln sigma so, with df = 0.01:
  tails far heavier than a normal's, which jnp cannot invert directly."""
  from scipy import stats  # Host-side only; scipy ships with scikit-learn.
  dist = stats.t(df, loc=loc, scale=scale)
  probs = np.linspace(dist.cdf(lo), dist.cdf(hi), num)
  return np.clip(dist.ppf(probs), lo, hi).astype(np.float32)


def sample_from_quantiles(key, n: int, quantiles):
  """n draws [n] by inverse-CDF sampling from a tabulated quantile function (linear between its points)."""
  u = jax.random.uniform(key, (n,)) * (len(quantiles) - 1)
  return jnp.interp(u, jnp.arange(len(quantiles), dtype=jnp.float32), jnp.asarray(quantiles))

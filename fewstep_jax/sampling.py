"""ODE samplers shared by every method.

One solver serves every parameterisation: a method supplies `drift(x, s) -> dx/ds` on its own time variable
(flow time t, or EDM sigma), a decreasing grid of that variable and (for Heun) the path's noise level at a grid
point; the solver does not know which time it is. The grid, its step count and which steps Heun corrects travel as
arrays (a SolverPlan), so a jitted sampler compiles once for every NFE and grid.

What an NFE buys (drift evaluations; a guided step calls the network twice, so with CFG halve the NFE first):
- euler: NFE steps on the method's grid, one evaluation each.
- heun: the fewest steps whose sound corrections can spend the NFE (`heun_plan`), corrected from the noise end; a
  correction is sound where the step keeps a quarter of its noise level (HEUN_MIN_NOISE_RATIO). So the first step
  from flow time 1 and every step onto the data end (t = 0, sigma = 0) are Euler steps, EDM's published grids (35
  NFE: 18 steps, 17 corrected) are unchanged, and a few-NFE budget spends itself on more Euler steps rather than on
  corrections across long drops (EDM at 3 NFE: 3 Euler steps, not a Heun step from sigma_max to sigma_min).
"""
import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.tree_util.register_dataclass, data_fields=['steps'],
                   meta_fields=['guidance', 'solver', 'gamma'])
@dataclasses.dataclass(frozen=True)
class SamplingPlan:
  """Everything `Method.sample` needs besides parameters, key, count and labels, as `Method.sampling_plan(nfe, ...)`
  builds it: `steps`, the arrays of an NFE (a SolverPlan or a ConsistencyPlan: traced in a compiled sampler, so
  that one compilation serves every NFE), and the sampling options a row of results names, static (a compiled
  sampler per value): the CFG scale, the ODE solver, TCD's gamma (None where the sampler has none)."""
  steps: Any
  guidance: float = 1.0
  solver: str | None = None
  gamma: float | None = None


class SolverPlan(NamedTuple):
  """What an ODE solve needs besides the drift and its start, as arrays, so that one compiled sampler serves every
  NFE and grid: the grid padded to a fixed length, how many of its steps to take, and which of them Heun corrects
  (`heun_plan`). A jitted sampler takes it as an argument."""
  grid: jax.Array        # [GRID_POINTS] float32: s_0 > s_1 > ... > s_K, then s_K repeated.
  num_steps: jax.Array   # int32 scalar K.
  corrected: jax.Array   # [GRID_POINTS] bool: whether step i (s_i -> s_{i+1}) is a Heun step (else Euler).


GRID_POINTS = 1024  # A padded grid's length: any solve of up to 1023 steps shares one compiled sampler.

# Heun corrects a step only where the path's noise level at the step's end is at least this fraction of the level
# at its start. The trapezoid averages the drift at both ends; the end's drift is evaluated at the Euler estimate,
# which after a long drop in noise level is an average of the data (a blurred image, a point between modes), where
# the denoiser's noise estimate has nothing to do with the noise left in the sample: one Heun step from EDM's
# sigma_max to sigma_min adds sigma_max / 2 times that difference (a Gaussian-mixture teacher: sliced W2 1746 at 3
# NFE against Euler's 0.43), and flow matching's step onto t = 0 averages in the data end's velocity -x. Every step
# of EDM's 18-step grid keeps its correction (the largest drop, sigma_min from 0.0076, is 3.8x), so the published
# samplers are unchanged at their NFE.
HEUN_MIN_NOISE_RATIO = 0.25


def _expand(s, x):
  """The grid's scalar time as the [B] vector every drift receives."""
  return jnp.full((x.shape[0],), s, x.dtype)


def _padded(grid, fill=None):
  """`grid` padded to a multiple of GRID_POINTS with its last point (or `fill`): numpy if concrete, traced if it
  is."""
  xp = jnp if isinstance(grid, jax.core.Tracer) else np
  dtype = np.float32 if fill is None else np.asarray(fill).dtype
  grid = xp.asarray(grid, dtype)
  length = -(-grid.shape[0] // GRID_POINTS) * GRID_POINTS
  return xp.concatenate([grid, xp.full((length - grid.shape[0],), grid[-1] if fill is None else fill, dtype)])


def euler_solve(drift, x, grid, num_steps=None):
  """Euler steps along `grid` (1-D array, s_0 > s_1 > ... > s_K): the first `num_steps` (default K, may be
  traced) of them. NFE = num_steps.

  drift(x [B, ...], s [B]) -> dx/ds [B, ...].
  """
  grid = jnp.asarray(grid)

  def step(i, x):
    s_cur, s_next = grid[i], grid[i + 1]
    return x + (s_next - s_cur) * drift(x, _expand(s_cur, x))
  return jax.lax.fori_loop(0, grid.shape[0] - 1 if num_steps is None else num_steps, step, x)


def heun_solve(drift, x, grid, corrected, num_steps=None):
  """Steps along `grid`: the first `num_steps` (default all; may be traced) of them, step i a Heun (2nd-order) step
  where corrected[i] (a bool array, may be traced), else an Euler step. NFE = num_steps + the corrected steps."""
  num_steps = grid.shape[0] - 1 if num_steps is None else num_steps
  grid, corrected = jnp.asarray(grid), jnp.asarray(corrected)

  def step(i, x):
    s_cur, s_next = grid[i], grid[i + 1]
    d_cur = drift(x, _expand(s_cur, x))
    x_euler = x + (s_next - s_cur) * d_cur

    def with_correction():
      return x + (s_next - s_cur) * 0.5 * (d_cur + drift(x_euler, _expand(s_next, x)))
    # The step's index is never batched, so under vmap this stays a branch and the Euler step skips the call.
    return jax.lax.cond(corrected[i], with_correction, lambda: x_euler)
  return jax.lax.fori_loop(0, num_steps, step, x)


SOLVERS = ('euler', 'heun')


def correctable_steps(grid, noise_level):
  """[K] bool: the steps of the decreasing `grid` (K + 1 points) where a Heun correction is sound: the noise
  level at the step's end, noise_level(s_{i+1}) (the path's EDM sigma: `paths.GaussianPath.sigma`), is positive and
  at least HEUN_MIN_NOISE_RATIO of the level at its start (an infinite start, flow time 1, never qualifies). numpy
  for a concrete grid, traced for a traced one (a grid search's)."""
  if isinstance(grid, jax.core.Tracer):
    xp, levels = jnp, noise_level(grid)
  else:
    with np.errstate(divide='ignore'):
      xp, levels = np, np.asarray(noise_level(np.asarray(grid, np.float64)), np.float64)
  start, end = levels[:-1], levels[1:]
  return (end > 0) & xp.isfinite(start) & (end >= HEUN_MIN_NOISE_RATIO * start * (1 - 1e-6))


def heun_plan(make_grid, nfe: int, noise_level):
  """(grid [K + 1], corrected [K] bool) of a Heun solve with at most `nfe` drift evaluations: the fewest steps K
  whose correctable steps (`correctable_steps`) can spend the budget, then the first nfe - K of those corrected
  (from the noise end), so that the solve spends exactly nfe where it can. A make_grid with a `num_steps` attribute
  (a stored grid, `fixed_grid`) fixes K; its correctable steps may then spend less than nfe."""
  fixed = getattr(make_grid, 'num_steps', None)
  if fixed is not None and fixed > nfe:
    raise ValueError(f'the stored grid has {fixed} solver steps, more than the {nfe} drift evaluations of this NFE: '
                     'make a grid for this NFE and solver (python -m fewstep_jax.tools.search_sampler_grids)')
  for num_steps in ([fixed] if fixed is not None else range(1, nfe + 1)):
    grid = make_grid(num_steps)
    correctable = correctable_steps(grid, noise_level)
    if fixed is not None or num_steps + correctable.sum() >= nfe:
      xp = jnp if isinstance(correctable, jax.core.Tracer) else np
      return grid, correctable & (xp.cumsum(correctable) <= nfe - num_steps)
  raise AssertionError('unreachable: nfe steps of Euler always fit')


def solver_plan(make_grid, solver: str, nfe: int, noise_level=None) -> SolverPlan:
  """The SolverPlan of `solve_plan` with `nfe` drift evaluations, built on the host: make_grid(num_steps) ->
  decreasing grid of num_steps + 1 points. solver: 'euler' (num_steps = nfe) or 'heun' (`heun_plan`, with the
  path's noise level of a grid point, noise_level(s) -> EDM sigma)."""
  if solver not in SOLVERS:
    raise ValueError(f'unknown ODE solver {solver!r}; known: {sorted(SOLVERS)}')
  if nfe < 1:
    raise ValueError(f'nfe must be at least 1, got {nfe}')
  with jax.ensure_compile_time_eval():  # Concrete also when the sampler is being traced with a static NFE.
    if solver == 'euler':
      grid = make_grid(getattr(make_grid, 'num_steps', nfe))
      corrected = np.zeros(grid.shape[0] - 1, bool)
    else:
      if noise_level is None:
        raise ValueError("the heun solver needs the path's noise level of a grid point (noise_level)")
      grid, corrected = heun_plan(make_grid, nfe, noise_level)
  return SolverPlan(_padded(grid), np.int32(corrected.shape[0]), _padded(corrected, fill=np.False_))


def solve_plan(drift, x, plan: SolverPlan, solver: str):
  """Integrates along `plan` (its arrays may be traced: the compiled solve does not depend on NFE or grid)."""
  if solver == 'euler':
    return euler_solve(drift, x, plan.grid, plan.num_steps)
  return heun_solve(drift, x, plan.grid, plan.corrected, plan.num_steps)


def solve(drift, x, make_grid, solver: str, nfe: int, noise_level=None):
  """Integrates with `nfe` drift evaluations: `solve_plan` along `solver_plan(make_grid, solver, nfe,
  noise_level)`."""
  return solve_plan(drift, x, solver_plan(make_grid, solver, nfe, noise_level), solver)


def fixed_grid(grid):
  """make_grid for `solve` that returns the given decreasing grid (a stored one) for its own step count, which
  it carries as `num_steps` (so the solver plans around it), and refuses another. The grid may be traced (a grid
  search compiles its sampler once for all grids)."""
  grid = grid if isinstance(grid, jax.core.Tracer) else np.asarray(grid, np.float32)

  def make_grid(num_steps):
    if num_steps + 1 != grid.shape[0]:
      raise ValueError(f'the stored grid has {grid.shape[0] - 1} solver steps, but this solver and NFE take '
                       f'{num_steps}: make a grid for this NFE and solver (python -m '
                       'fewstep_jax.tools.search_sampler_grids)')
    return grid
  make_grid.num_steps = grid.shape[0] - 1
  return make_grid


def drift_evaluations(nfe: int, labels, guidance: float) -> int:
  """How many drift evaluations a budget of `nfe` network calls buys: with classifier-free guidance
  (labels given, guidance != 1) each evaluation calls the network twice (conditional and null label)."""
  if labels is None or guidance == 1.0:
    return nfe
  if nfe < 2 or nfe % 2:
    raise ValueError(f'with classifier-free guidance (scale {guidance}) each step costs 2 network calls, so '
                     f'nfe={nfe} must be even and at least 2; or sample with guidance=1.')
  return nfe // 2


class ConsistencyPlan(NamedTuple):
  """`consistency_sample`'s times as arrays, so that one compiled sampler serves every NFE: the decreasing times
  padded to a fixed length, and how many of them to use."""
  times: jax.Array  # [GRID_POINTS] float32.
  count: jax.Array  # int32 scalar.


def consistency_plan(times) -> ConsistencyPlan:
  """The ConsistencyPlan of a sequence of decreasing times (Python floats or a 1-D array)."""
  times = times if isinstance(times, jax.core.Tracer) else np.asarray(times, np.float32)
  return ConsistencyPlan(_padded(times), np.int32(times.shape[0]))


def consistency_sample(x0_fn, path, times, x, key, gamma: float = 1.0):
  """Multistep consistency sampling with TCD's stochastic gamma, on any Gaussian path.

  At each time t_i of `times` (decreasing, first = the start time of `x`): x0 = x0_fn(x, t_i); stop after the
  last time; otherwise move to s = (1 - gamma) t_{i+1} along the predicted noise (x_s = alpha_s x0 + beta_s eps_hat,
  eps_hat = (x - alpha_t x0) / beta_t) and re-noise from s to t_{i+1} with fresh noise, so that x has exactly the
  path's marginal at t_{i+1} if x0 is exact. gamma = 1 (s = 0) is multistep consistency sampling (re-noise x0);
  gamma = 0 is deterministic (a DDIM step). NFE = len(times), one x0_fn call per time.

  Args:
    x0_fn: (x [B, ...], time [B]) -> data prediction [B, ...].
    path: a `paths.GaussianPath`; times are in its time variable (flow t, EDM sigma, TrigFlow tau).
    times: the decreasing times, a sequence of Python floats or a 1-D array, or a ConsistencyPlan (whose arrays
      may be traced: the compiled sampler then does not depend on NFE).
    x: [B, ...], a sample of the path at times[0].
    key: PRNG key for the re-noising.
    gamma: TCD's stochasticity in [0, 1].

  Returns:
    [B, ...] the final data prediction.
  """
  if not 0.0 <= gamma <= 1.0:
    raise ValueError(f'gamma must be in [0, 1], got {gamma}')
  plan = times if isinstance(times, ConsistencyPlan) else consistency_plan(times)
  grid = jnp.asarray(plan.times)
  batch = x.shape[0]

  def move(i, carry):
    x, key = carry
    t_now = jnp.full((batch,), grid[i])
    key, noise_key = jax.random.split(key)
    noise = jax.random.normal(noise_key, x.shape, x.dtype)
    return consistency_step(path, x, x0_fn(x, t_now), t_now, grid[i + 1], noise, gamma), key
  if isinstance(plan.count, jax.core.Tracer):  # One compiled loop for every NFE.
    x, _ = jax.lax.fori_loop(0, plan.count - 1, move, (x, key))
  else:  # Unrolled, as few-step samplers are: x0_fn is called (and traced) once per time.
    for i in range(int(plan.count) - 1):
      x, key = move(i, (x, key))
  return x0_fn(x, jnp.full((batch,), grid[plan.count - 1]))


def consistency_step(path, x, x0, time, time_next, noise, gamma: float):
  """One move of `consistency_sample`: from x at `time` [B] with data prediction x0 to the path at the scalar
  `time_next` (a Python float or traced), with TCD's gamma and the fresh standard normal `noise` shaped like x.

  It moves to s = (1 - gamma) time_next along the predicted noise (x_s = alpha_s x0 + beta_s eps_hat,
  eps_hat = (x - alpha_t x0) / beta_t), then re-noises from s to time_next, so that the result has exactly the
  path's marginal at time_next if x0 is exact.
  """
  s = (1.0 - gamma) * jnp.asarray(time_next, jnp.float32)
  eps_hat = path.eps_from_x0(x, x0, time)
  x_s = path.noisy(x0, eps_hat, jnp.full(x.shape[:1], s))
  # Forward kernel of the path from s to time_next: x_t = (alpha_t / alpha_s) x_s + sqrt(beta_t^2 -
  # (alpha_t / alpha_s)^2 beta_s^2) eps'; it keeps the marginal x_t = alpha_t x + beta_t eps.
  alpha_s, beta_s, _, _ = path.coefficients(s)
  alpha_t, beta_t, _, _ = path.coefficients(jnp.asarray(time_next, jnp.float32))
  ratio = alpha_t / alpha_s
  fresh_std = jnp.sqrt(jnp.maximum(beta_t**2 - (ratio * beta_s) ** 2, 0.0))
  return ratio * x_s + fresh_std * noise

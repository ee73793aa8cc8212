"""ODE samplers shared by every method.

One solver serves every parameterisation: a method supplies `drift(x, s) -> dx/ds` on its own time variable
(flow time t, or EDM sigma) and a decreasing grid of that variable; the solver does not know which it is. The
grid, its step count and the solver's last-step rule travel as arrays (a SolverPlan), so a jitted sampler compiles
once for every NFE and grid.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class SolverPlan(NamedTuple):
  """What an ODE solve needs besides the drift and its start, as arrays, so that one compiled sampler serves every
  NFE and grid: the grid padded to a fixed length, how many of its steps to take, and whether the last step is
  plain Euler (Heun with an odd NFE or a singular end). A jitted sampler takes it as an argument."""
  grid: jax.Array        # [GRID_POINTS] float32: s_0 > s_1 > ... > s_K, then s_K repeated.
  num_steps: jax.Array   # int32 scalar K.
  euler_last: jax.Array  # bool scalar.


GRID_POINTS = 1024  # A padded grid's length: any solve of up to 1023 steps shares one compiled sampler.


def _expand(s, x):
  """The grid's scalar time as the [B] vector every drift receives."""
  return jnp.full((x.shape[0],), s, x.dtype)


def _padded(grid):
  """`grid` padded with its last point to a multiple of GRID_POINTS: numpy if concrete, traced if it is."""
  xp = jnp if isinstance(grid, jax.core.Tracer) else np
  grid = xp.asarray(grid, np.float32)
  length = -(-grid.shape[0] // GRID_POINTS) * GRID_POINTS
  return xp.concatenate([grid, xp.full((length - grid.shape[0],), grid[-1], np.float32)])


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


def heun_solve(drift, x, grid, euler_last, num_steps=None):
  """Heun (2nd-order) steps along `grid`: the first `num_steps` (default all; may be traced) of them. With
  euler_last (a bool, may be traced), the last step is plain Euler, as in EDM, so the drift is never evaluated at
  the grid's end (sigma = 0 is singular for a denoiser): NFE = 2K - 1 for K steps; otherwise NFE = 2K."""
  num_steps = grid.shape[0] - 1 if num_steps is None else num_steps
  grid = jnp.asarray(grid)

  def step(i, x):
    s_cur, s_next = grid[i], grid[i + 1]
    d_cur = drift(x, _expand(s_cur, x))
    x_euler = x + (s_next - s_cur) * d_cur

    def corrected():
      return x + (s_next - s_cur) * 0.5 * (d_cur + drift(x_euler, _expand(s_next, x)))
    # The step's index is never batched, so under vmap this stays a branch and the Euler step skips the call.
    return jax.lax.cond(jnp.logical_and(euler_last, i == num_steps - 1), lambda: x_euler, corrected)
  return jax.lax.fori_loop(0, num_steps, step, x)


def solver_steps(solver: str, nfe: int, singular_end: bool) -> int:
  """The number of grid steps `solve` takes for `nfe` drift evaluations (its grid has one point more)."""
  if solver == 'euler':
    return nfe
  return (nfe + 1) // 2 if singular_end or nfe % 2 == 1 else nfe // 2


SOLVERS = ('euler', 'heun')


def solver_plan(make_grid, solver: str, nfe: int, singular_end: bool = False) -> SolverPlan:
  """The SolverPlan of `solve` with exactly `nfe` drift evaluations (for Heun with a singular end: the largest
  odd number <= nfe, at least 1). Built on the host: make_grid(num_steps) -> decreasing grid of num_steps + 1
  points. solver: 'euler' (num_steps = nfe) or 'heun' (two evaluations a step)."""
  if solver not in SOLVERS:
    raise ValueError(f'unknown ODE solver {solver!r}; known: {sorted(SOLVERS)}')
  if nfe < 1:
    raise ValueError(f'nfe must be at least 1, got {nfe}')
  num_steps = solver_steps(solver, nfe, singular_end)
  # Euler never evaluates the drift at the grid's last point; Heun ends with an Euler step when nfe is odd or the
  # drift must not be evaluated at the grid's end.
  euler_last = solver == 'heun' and (singular_end or nfe % 2 == 1)
  with jax.ensure_compile_time_eval():  # Concrete also when the sampler is being traced with a static NFE.
    grid = make_grid(num_steps)
  return SolverPlan(_padded(grid), np.int32(num_steps), np.bool_(euler_last))


def solve_plan(drift, x, plan: SolverPlan, solver: str):
  """Integrates along `plan` (its arrays may be traced: the compiled solve does not depend on NFE or grid)."""
  if solver == 'euler':
    return euler_solve(drift, x, plan.grid, plan.num_steps)
  return heun_solve(drift, x, plan.grid, plan.euler_last, plan.num_steps)


def solve(drift, x, make_grid, solver: str, nfe: int, singular_end: bool = False):
  """Integrates with exactly `nfe` drift evaluations: `solve_plan` along `solver_plan(make_grid, solver, nfe,
  singular_end)`."""
  return solve_plan(drift, x, solver_plan(make_grid, solver, nfe, singular_end), solver)


def fixed_grid(grid):
  """make_grid for `solve` that returns the given decreasing grid (a stored schedule), and refuses a step count
  it was not made for. The grid may be traced (a schedule search compiles its sampler once for all grids)."""
  grid = grid if isinstance(grid, jax.core.Tracer) else np.asarray(grid, np.float32)

  def make_grid(num_steps):
    if num_steps + 1 != grid.shape[0]:
      raise ValueError(f'the schedule has {grid.shape[0] - 1} solver steps, but this solver and NFE take '
                       f'{num_steps}: make a schedule for this NFE and solver (python -m fewstep_jax.schedules)')
    return grid
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


def sample_labels(n: int, num_classes: int):
  """Labels for a class-conditional sample grid: 0, 1, ..., num_classes - 1, 0, 1, ...; None if
  unconditional."""
  return labels_of(jnp.arange(n, dtype=jnp.int32), num_classes)


def labels_of(indices, num_classes: int):
  """The label of sample `indices` (numpy or jnp) in that schedule: index % num_classes; None if
  unconditional."""
  return indices % num_classes if num_classes else None


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

"""ODE samplers shared by every method.

One solver serves every parameterisation: a method supplies `drift(x, s) -> dx/ds` on its own time variable
(flow time t, or EDM sigma) and a decreasing grid of that variable; the solver does not know which it is.
"""
import jax
import jax.numpy as jnp


def _expand(s, x):
  """The grid's scalar time as the [B] vector every drift receives."""
  return jnp.full((x.shape[0],), s, x.dtype)


def euler_solve(drift, x, grid):
  """Euler steps along `grid` (1-D array, s_0 > s_1 > ... > s_K). NFE = K.

  drift(x [B, ...], s [B]) -> dx/ds [B, ...].
  """
  def step(x, pair):
    s_cur, s_next = pair
    return x + (s_next - s_cur) * drift(x, _expand(s_cur, x)), None
  x, _ = jax.lax.scan(step, x, (grid[:-1], grid[1:]))
  return x


def heun_solve(drift, x, grid, euler_last: bool):
  """Heun (2nd-order) steps along `grid`. With euler_last, the last step is plain Euler, as in EDM, so the
  drift is never evaluated at the grid's end (sigma = 0 is singular for a denoiser): NFE = 2K - 1 for K steps;
  otherwise NFE = 2K."""
  def step(x, pair):
    s_cur, s_next = pair
    d_cur = drift(x, _expand(s_cur, x))
    x_euler = x + (s_next - s_cur) * d_cur
    d_next = drift(x_euler, _expand(s_next, x))
    return x + (s_next - s_cur) * 0.5 * (d_cur + d_next), None
  if not euler_last:
    return jax.lax.scan(step, x, (grid[:-1], grid[1:]))[0]
  if len(grid) > 2:
    x, _ = jax.lax.scan(step, x, (grid[:-2], grid[1:-1]))
  return euler_solve(drift, x, grid[-2:])


def _euler(drift, x, make_grid, nfe, singular_end):
  del singular_end  # Euler never evaluates the drift at the grid's last point.
  return euler_solve(drift, x, make_grid(nfe))


def _heun(drift, x, make_grid, nfe, singular_end):
  # A plain Euler last step when nfe is odd, or when the drift must not be evaluated at the grid's end.
  euler_last = singular_end or nfe % 2 == 1
  return heun_solve(drift, x, make_grid(solver_steps('heun', nfe, singular_end)), euler_last)


def solver_steps(solver: str, nfe: int, singular_end: bool) -> int:
  """The number of grid steps `solve` takes for `nfe` drift evaluations (its grid has one point more)."""
  if solver == 'euler':
    return nfe
  return (nfe + 1) // 2 if singular_end or nfe % 2 == 1 else nfe // 2


SOLVERS = {'euler': _euler, 'heun': _heun}


def solve(drift, x, make_grid, solver: str, nfe: int, singular_end: bool = False):
  """Integrates with exactly `nfe` drift evaluations (for Heun with a singular end: the largest odd number
  <= nfe, at least 1).

  make_grid(num_steps) -> decreasing grid of num_steps + 1 points. solver: 'euler' (num_steps = nfe) or
  'heun' (two evaluations a step).
  """
  if solver not in SOLVERS:
    raise ValueError(f'unknown ODE solver {solver!r}; known: {sorted(SOLVERS)}')
  if nfe < 1:
    raise ValueError(f'nfe must be at least 1, got {nfe}')
  return SOLVERS[solver](drift, x, make_grid, nfe, singular_end)


def fixed_grid(grid):
  """make_grid for `solve` that returns the given decreasing grid (a stored schedule), and refuses a step count
  it was not made for."""
  grid = jnp.asarray(grid, jnp.float32)

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
    times: the decreasing times, a sequence of Python floats or a 1-D array.
    x: [B, ...], a sample of the path at times[0].
    key: PRNG key for the re-noising.
    gamma: TCD's stochasticity in [0, 1].

  Returns:
    [B, ...] the final data prediction.
  """
  if not 0.0 <= gamma <= 1.0:
    raise ValueError(f'gamma must be in [0, 1], got {gamma}')
  times = [float(t) for t in times]
  batch = x.shape[0]
  for i, t in enumerate(times):
    t_now = jnp.full((batch,), t)
    x0 = x0_fn(x, t_now)
    if i == len(times) - 1:
      return x0
    key, noise_key = jax.random.split(key)
    x = consistency_step(path, x, x0, t_now, times[i + 1], jax.random.normal(noise_key, x.shape, x.dtype), gamma)


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

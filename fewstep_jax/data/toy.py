"""2-D toy distributions, sampled on device with pure jnp.

Every sampler has the signature `sampler(key, n) -> float32 [n, 2]`, is jittable with `n` static, and is
standardised to zero mean and unit standard deviation per coordinate using the distribution's analytic
moments (not a sample estimate), so every toy run shares one noise scale and `sigma_data = 1`:

- '8gaussians': eight isotropic Gaussians (std 0.1 x radius) on a circle; raw per-coordinate variance
  radius^2 / 2 + std^2, divided out exactly.
- 'moons': two interleaved half circles (the scikit-learn construction) plus Gaussian noise 0.05; shifted by
  the analytic mean (0.5, 0.25) and divided by the analytic std per coordinate.
- 'checkerboard': uniform on the 8 dark cells of a 4x4 board on [-2, 2]^2; each marginal is uniform on
  [-2, 2] (variance 4/3), so the scale is sqrt(3) / 2.
- 'spirals': two Archimedean spiral arms r = theta (1.5 turns, area-uniform along the arm) plus Gaussian noise;
  scaled so that E|x|^2 = 2 exactly. The two coordinates' variances then average to 1 but differ from it by a
  few percent each (the arms end at an angle that favours one axis).

Each distribution also has its geometry (`TOY_GEOMETRY`): the distance of a point to its support's skeleton (the
mode centres, the arcs, the dark cells, the arms), how far from it true samples reach, and the parts a sample
belongs to (a mode, an arm's half, a cell), which the toy metrics count samples off the support and parts covered
with (eval/evaluate.py ToyMetrics).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from fewstep_jax.errors import ConfigError


_EIGHT_GAUSSIANS_MODE_STD = 0.1  # Relative to the unit circle of centres.
_MOONS_NOISE_STD = 0.05
_MOONS_MEAN = (0.5, 0.25)
_MOONS_STD = (
    math.sqrt(0.75 + _MOONS_NOISE_STD**2),
    math.sqrt(0.5625 - 1.0 / math.pi + _MOONS_NOISE_STD**2),
)
_SPIRAL_MAX_ANGLE = 3.0 * math.pi
_SPIRAL_NOISE_STD = 0.25


def sample_eight_gaussians(key, n: int):
  """Returns float32 [n, 2]: a uniform mixture of 8 Gaussians whose centres are evenly spaced on a circle."""
  mode_key, noise_key = jax.random.split(key)
  angles = (2.0 * math.pi / 8.0) * jax.random.randint(mode_key, (n,), 0, 8)
  centres = jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=-1)
  points = centres + _EIGHT_GAUSSIANS_MODE_STD * jax.random.normal(noise_key, (n, 2))
  # Eight symmetric angles make the mean of cos^2 exactly 1/2 per coordinate.
  return points / math.sqrt(0.5 + _EIGHT_GAUSSIANS_MODE_STD**2)


def sample_moons(key, n: int):
  """Returns float32 [n, 2]: two interleaving half circles, each chosen with probability 1/2."""
  arm_key, angle_key, noise_key = jax.random.split(key, 3)
  lower_arm = jax.random.bernoulli(arm_key, 0.5, (n,))
  angles = jax.random.uniform(angle_key, (n,), maxval=math.pi)
  upper = jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=-1)
  lower = jnp.stack([1.0 - jnp.cos(angles), 0.5 - jnp.sin(angles)], axis=-1)
  points = jnp.where(lower_arm[:, None], lower, upper)
  points = points + _MOONS_NOISE_STD * jax.random.normal(noise_key, (n, 2))
  return (points - jnp.array(_MOONS_MEAN)) / jnp.array(_MOONS_STD)


def sample_checkerboard(key, n: int):
  """Returns float32 [n, 2]: uniform over the dark cells of a 4x4 checkerboard."""
  column_key, row_key, offset_key = jax.random.split(key, 3)
  column = jax.random.randint(column_key, (n,), 0, 4)
  # A cell is dark when row + column is even: the row has the column's parity.
  row = 2 * jax.random.randint(row_key, (n,), 0, 2) + column % 2
  cells = jnp.stack([column, row], axis=-1).astype(jnp.float32)
  points = cells - 2.0 + jax.random.uniform(offset_key, (n, 2))
  return points * (math.sqrt(3.0) / 2.0)


def sample_spirals(key, n: int):
  """Returns float32 [n, 2]: two interleaved spiral arms, the second the first rotated by 180 degrees."""
  arm_key, angle_key, noise_key = jax.random.split(key, 3)
  arm_sign = jnp.where(jax.random.bernoulli(arm_key, 0.5, (n,)), 1.0, -1.0)
  # sqrt of a uniform gives density proportional to the angle, i.e. to the arc length of r = theta.
  angles = _SPIRAL_MAX_ANGLE * jnp.sqrt(jax.random.uniform(angle_key, (n,)))
  arms = (arm_sign * angles)[:, None] * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=-1)
  points = arms + _SPIRAL_NOISE_STD * jax.random.normal(noise_key, (n, 2))
  # E|x|^2 = E[theta^2] + 2 noise^2 = max_angle^2 / 2 + 2 noise^2.
  return points * math.sqrt(2.0 / (_SPIRAL_MAX_ANGLE**2 / 2.0 + 2.0 * _SPIRAL_NOISE_STD**2))


TOY_SAMPLERS = {
    '8gaussians': sample_eight_gaussians,
    'moons': sample_moons,
    'checkerboard': sample_checkerboard,
    'spirals': sample_spirals,
}


def get_toy_sampler(name: str):
  """Returns the sampler `(key, n) -> float32 [n, 2]` registered under `name`."""
  if name not in TOY_SAMPLERS:
    raise ConfigError(f'Unknown toy distribution {name!r}; available: {sorted(TOY_SAMPLERS)}')
  return TOY_SAMPLERS[name]


def sample_toy(name: str, key, n: int):
  """Returns float32 [n, 2] samples of the toy distribution `name` (see the module docstring)."""
  return get_toy_sampler(name)(key, n)


# --- Geometry: where each distribution's mass lies, in its standardised coordinates. ---

class Geometry:
  """distance(x [N, 2]) -> [N]: the distance of standardised points to the support's skeleton (in the units its
  noise is isotropic in: standardised for 8 gaussians, the raw construction's for the others);
  tolerance: the distance beyond which a point is off the support (3 noise standard deviations, which 1.1% of
  true samples exceed around 8 gaussians' points and 0.3% around the curves; a tenth of a cell where there is no
  noise); part(x [N, 2]) -> [N] int: the part (mode,
  arc half, cell, arm third) nearest each point, of num_parts, which true samples fill equally."""

  def __init__(self, distance, tolerance: float, part, num_parts: int):
    self.distance, self.tolerance, self.part, self.num_parts = distance, tolerance, part, num_parts


def _nearest_point(x, points):
  """(distance [N], index [N]) of each x [N, 2]'s nearest point of points [P, 2]."""
  squared = jnp.sum((x[:, None, :] - points[None, :, :]) ** 2, axis=-1)
  return jnp.sqrt(jnp.min(squared, axis=1)), jnp.argmin(squared, axis=1)


_EIGHT_GAUSSIANS_SCALE = math.sqrt(0.5 + _EIGHT_GAUSSIANS_MODE_STD**2)
# numpy, not jnp: a module-level jax array would start the backend at import, before jax.distributed.initialize.
_EIGHT_CENTRES = np.asarray([[math.cos(2 * math.pi * k / 8), math.sin(2 * math.pi * k / 8)] for k in range(8)],
                            np.float32) / _EIGHT_GAUSSIANS_SCALE


def _curve_points(count: int, curve):
  """[count, 2]: curve(u) at count evenly spaced u in [0, 1], dense enough that the nearest one is the curve's
  nearest point to within a few thousandths."""
  return curve(jnp.linspace(0.0, 1.0, count))


def _moons_raw(x):
  return x * jnp.array(_MOONS_STD) + jnp.array(_MOONS_MEAN)


def _moons_arcs():
  """[2 x 1000, 2] raw points of the upper arc, then the lower one."""
  upper = _curve_points(1000, lambda u: jnp.stack([jnp.cos(math.pi * u), jnp.sin(math.pi * u)], -1))
  lower = _curve_points(1000, lambda u: jnp.stack([1.0 - jnp.cos(math.pi * u), 0.5 - jnp.sin(math.pi * u)], -1))
  return jnp.concatenate([upper, lower])


def _moons_distance(x):
  """Distance in raw units, where the noise (0.05) is isotropic and the tolerance is given."""
  return _nearest_point(_moons_raw(x), _moons_arcs())[0]


def _moons_part(x):
  """0..3: the upper arc's halves, then the lower arc's."""
  return _nearest_point(_moons_raw(x), _moons_arcs())[1] // 500


_CHECKER_SCALE = math.sqrt(3.0) / 2.0


def _checker_raw(x):
  return x / _CHECKER_SCALE + 2.0


def _checker_distance(x):
  """Distance in raw units (cells of side 1 on [0, 4]^2) to the nearest dark cell (0 inside one)."""
  raw = _checker_raw(x)
  cells = jnp.asarray([[c, 2 * r + c % 2] for c in range(4) for r in range(2)], jnp.float32)
  gap = jnp.maximum(jnp.maximum(cells[None] - raw[:, None], raw[:, None] - (cells[None] + 1.0)), 0.0)
  return jnp.min(jnp.sqrt(jnp.sum(gap**2, -1)), axis=1)


def _checker_part(x):
  """0..7: the dark cell of the point's column and nearest dark row (column-major)."""
  raw = jnp.clip(_checker_raw(x), 0.0, 3.999)
  column = jnp.floor(raw[:, 0]).astype(jnp.int32)
  row = jnp.clip(jnp.round((raw[:, 1] - 0.5 - column % 2) / 2), 0, 1).astype(jnp.int32)
  return column * 2 + row


_SPIRAL_SCALE = math.sqrt(2.0 / (_SPIRAL_MAX_ANGLE**2 / 2.0 + 2.0 * _SPIRAL_NOISE_STD**2))


def _spiral_arms():
  """[2 x 3000, 2] raw points of both arms, each from its centre out (sqrt spacing in angle: even along the arm)."""
  def arm(sign):
    return _curve_points(3000, lambda u: sign * (_SPIRAL_MAX_ANGLE * jnp.sqrt(u))[:, None]
                         * jnp.stack([jnp.cos(_SPIRAL_MAX_ANGLE * jnp.sqrt(u)),
                                      jnp.sin(_SPIRAL_MAX_ANGLE * jnp.sqrt(u))], -1))
  return jnp.concatenate([arm(1.0), arm(-1.0)])


def _spiral_distance(x):
  """Distance in raw units, where the noise (0.25) is isotropic and the tolerance is given."""
  return _nearest_point(x / _SPIRAL_SCALE, _spiral_arms())[0]


def _spiral_part(x):
  """0..5: each arm's thirds by arc length (its points are evenly spaced along it)."""
  return _nearest_point(x / _SPIRAL_SCALE, _spiral_arms())[1] // 1000


TOY_GEOMETRY = {
    '8gaussians': Geometry(lambda x: _nearest_point(x, _EIGHT_CENTRES)[0],
                           3.0 * _EIGHT_GAUSSIANS_MODE_STD / _EIGHT_GAUSSIANS_SCALE,
                           lambda x: _nearest_point(x, _EIGHT_CENTRES)[1], 8),
    'moons': Geometry(_moons_distance, 3.0 * _MOONS_NOISE_STD, _moons_part, 4),
    'checkerboard': Geometry(_checker_distance, 0.1, _checker_part, 8),
    'spirals': Geometry(_spiral_distance, 3.0 * _SPIRAL_NOISE_STD, _spiral_part, 6),
}


def off_support_share(name: str, x) -> float:
  """The share of points x [N, 2] farther from the support of `name` than true samples reach (its tolerance)."""
  geometry = TOY_GEOMETRY[name]
  return float(jnp.mean(geometry.distance(jnp.asarray(x)) > geometry.tolerance))


def parts_covered(name: str, x) -> float:
  """The share of the distribution's parts (modes, arc halves, cells, arm thirds) holding at least a quarter of
  their share of the on-support points of x [N, 2]: 1 for true samples, k / parts with k parts left."""
  geometry = TOY_GEOMETRY[name]
  x = jnp.asarray(x)
  on = geometry.distance(x) <= geometry.tolerance
  counts = jnp.zeros(geometry.num_parts).at[geometry.part(x)].add(on.astype(jnp.float32))
  return float(jnp.mean(counts >= 0.25 * x.shape[0] / geometry.num_parts))


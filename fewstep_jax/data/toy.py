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
"""
import math

import jax
import jax.numpy as jnp

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

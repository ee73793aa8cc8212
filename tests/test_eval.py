"""Sample metrics against closed forms, the toy geometry's off-support share and part coverage, the shipped digits classifier and its Frechet floor, and the PNG writers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from PIL import Image

from fewstep_jax.data import toy
from fewstep_jax.data.digits_arrays import load_digits_arrays, to_model_range
from fewstep_jax.eval import (DigitsEvaluator, digits_classifier, frechet_distance, gaussian_stats, mmd_rbf,
                              save_image_grid, save_scatter, sliced_wasserstein2)


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------

def test_frechet_of_diagonal_gaussians_is_closed_form():
  mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 1.0])
  var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
  expected = np.sum((mu1 - mu2)**2) + np.sum((np.sqrt(var1) - np.sqrt(var2))**2)
  assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_matches_the_general_sqrtm_formula():
  rng = np.random.RandomState(0)
  a, b = rng.randn(2, 6, 6)
  cov1, cov2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
  mu1, mu2 = rng.randn(2, 6)
  reference = (np.sum((mu1 - mu2)**2) + np.trace(cov1) + np.trace(cov2) -
               2 * np.trace(scipy.linalg.sqrtm(cov1 @ cov2)).real)
  assert frechet_distance(mu1, cov1, mu2, cov2) == pytest.approx(reference, rel=1e-8)
  assert frechet_distance(mu1, cov1, mu1, cov1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_is_finite_for_singular_covariances():
  rng = np.random.RandomState(1)
  low_rank = rng.randn(8, 2)
  cov = low_rank @ low_rank.T  # Rank 2 in 8 dimensions, like the covariance of dead ReLU features.
  distance = frechet_distance(np.zeros(8), cov, np.zeros(8), 2.0 * cov)
  # Commuting covariances: tr(cov + 2 cov - 2 sqrt(2) cov) = (3 - 2 sqrt 2) tr(cov).
  assert distance == pytest.approx((3 - 2 * np.sqrt(2)) * np.trace(cov), rel=1e-6)


def test_gaussian_stats_and_floor_of_two_samples_of_one_gaussian():
  rng = np.random.RandomState(2)
  x, y = rng.randn(2, 5000, 4)
  mu, cov = gaussian_stats(x)
  np.testing.assert_allclose(mu, x.mean(0))
  np.testing.assert_allclose(cov, np.cov(x.T))
  floor = frechet_distance(*gaussian_stats(x), *gaussian_stats(y))
  shifted = frechet_distance(*gaussian_stats(x), *gaussian_stats(y + 0.5))
  assert floor < 0.01  # Sampling noise only: about D (D + 1) / (2 N) in expectation.
  assert shifted == pytest.approx(4 * 0.25, abs=0.05)


def test_sliced_wasserstein_of_a_shift_is_its_mean_squared_projection():
  rng = np.random.RandomState(3)
  x = rng.randn(500, 4).astype(np.float32)
  shift = np.array([1.0, -2.0, 0.5, 0.0], np.float32)
  # Every projection of x + d is that of x moved by theta . d, and E_theta (theta . d)^2 = |d|^2 / D.
  value = float(sliced_wasserstein2(x, x + shift, jax.random.key(0), num_projections=20_000))
  assert value == pytest.approx(np.sum(shift**2) / 4, rel=0.03)


def test_sliced_wasserstein_floor_and_shape_check():
  rng = np.random.RandomState(4)
  x, y = rng.randn(2, 2000, 2).astype(np.float32)
  floor = float(sliced_wasserstein2(x, y, jax.random.key(1)))
  assert 0 < floor < 0.01
  assert float(sliced_wasserstein2(x, y + 1.0, jax.random.key(1))) > 50 * floor
  with pytest.raises(ValueError, match='equal sample counts'):
    sliced_wasserstein2(x, y[:10], jax.random.key(1))


def test_mmd_is_the_unbiased_u_statistic():
  rng = np.random.RandomState(5)
  x, y = rng.randn(7, 2), rng.randn(5, 2) + 0.3
  bandwidths = (0.5, 2.0)
  k = lambda a, b: sum(np.exp(-np.sum((a - b)**2) / (2 * h**2)) for h in bandwidths)
  k_xx = np.mean([k(x[i], x[j]) for i in range(7) for j in range(7) if i != j])
  k_yy = np.mean([k(y[i], y[j]) for i in range(5) for j in range(5) if i != j])
  k_xy = np.mean([k(a, b) for a in x for b in y])
  assert float(mmd_rbf(x, y, bandwidths)) == pytest.approx(k_xx + k_yy - 2 * k_xy, rel=1e-5)


def test_mmd_near_zero_for_one_distribution_and_positive_for_a_shift():
  rng = np.random.RandomState(6)
  x, y = rng.randn(2, 1000, 2).astype(np.float32)
  same = float(mmd_rbf(x, y))
  shifted = float(mmd_rbf(x, y + np.float32(0.5)))
  assert abs(same) < 0.005
  assert shifted > 0.1 and shifted > 20 * abs(same)


# ---------------------------------------------------------------------------------------------------------------
# Digits classifier and Frechet distance
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def evaluator():
  return DigitsEvaluator()


@pytest.mark.parametrize('name', sorted(toy.TOY_SAMPLERS))
def test_toy_geometry_sees_samples_off_the_support_and_missing_parts(name):
  """True samples: nearly all within the tolerance (3 noise standard deviations: 1.1% beyond it around 8 gaussians'
  points, 0.3% around the curves, none for the cells) and every part covered. The same points moved by half a
  standard deviation of the data are mostly off the support; keeping only the points of one part covers one part."""
  x = toy.sample_toy(name, jax.random.PRNGKey(0), 4000)
  assert toy.off_support_share(name, x) < 0.02 and toy.parts_covered(name, x) == 1.0
  assert toy.off_support_share(name, x + 0.5) > 0.3
  geometry = toy.TOY_GEOMETRY[name]
  one_part = x[np.asarray(geometry.part(x)) == 0]
  assert toy.parts_covered(name, one_part) == pytest.approx(1 / geometry.num_parts)


def test_toy_geometry_sees_a_ring_bridging_the_modes():
  """Eight gaussians with a third of the samples on the circle through the modes (the mode bridging a one-step
  sampler can show): sliced W2 stays near its floor, the off-support share rises well above the true samples'."""
  x = toy.sample_toy('8gaussians', jax.random.PRNGKey(0), 3000)
  angle = jax.random.uniform(jax.random.PRNGKey(1), (1000,), maxval=2 * np.pi)
  ring = jnp.stack([jnp.cos(angle), jnp.sin(angle)], 1) / np.sqrt(0.51)
  bridged = jnp.concatenate([x[:2000], ring])
  reference = toy.sample_toy('8gaussians', jax.random.PRNGKey(2), 3000)
  w2 = lambda points: float(sliced_wasserstein2(points, reference, jax.random.PRNGKey(3)))
  assert w2(bridged) < 3 * w2(x)
  assert toy.off_support_share('8gaussians', bridged) > 5 * toy.off_support_share('8gaussians', x)


@pytest.fixture(scope='module')
def test_split():
  images, labels = load_digits_arrays('test')
  return to_model_range(images), labels


def test_shipped_classifier_is_accurate(evaluator, test_split):
  images, labels = test_split
  assert evaluator.features(images).shape == (360, digits_classifier.FEATURE_DIM)
  assert evaluator.class_accuracy(images, labels) >= 0.95


def test_digits_frechet_self_floor_and_noise(evaluator, test_split):
  images, _ = test_split
  assert evaluator.frechet(images) == pytest.approx(0.0, abs=1e-6)
  floor = evaluator.floor()
  assert floor > 0.1
  noise = np.random.RandomState(7).uniform(-1, 1, images.shape)
  assert evaluator.frechet(noise) > 20 * floor
  # Fewer samples, larger bias: the floor reported beside a generator uses the generator's sample count.
  assert evaluator.floor(300, seed=0) > evaluator.floor(1000, seed=0) > floor


def test_evaluator_rejects_wrong_shapes(evaluator):
  with pytest.raises(ValueError, match=r'\[N, 8, 8, 1\]'):
    evaluator.features(np.zeros((4, 8, 8)))


def test_missing_weights_name_the_path_and_the_script(tmp_path):
  missing = str(tmp_path / 'none.msgpack')
  with pytest.raises(FileNotFoundError, match='train_digits_classifier.py') as error:
    DigitsEvaluator(missing)
  assert missing in str(error.value)


# ---------------------------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------------------------

def test_image_grid_png_size_and_pixels(tmp_path):
  images = -np.ones((10, 8, 8, 1), np.float32)
  images[3, 2, 5, 0] = 1.0  # One white pixel in the fourth tile (row 0, column 3).
  path = str(tmp_path / 'grid.png')
  save_image_grid(path, images, ncol=4, scale=4)
  with Image.open(path) as png:
    assert png.format == 'PNG' and png.mode == 'L'
    assert png.size == ((4 * 9 + 1) * 4, (3 * 9 + 1) * 4)  # (width, height): 3 rows of 4, 1-pixel gaps.
    pixels = np.asarray(png)
  top, left = (1 + 2) * 4, (1 + 3 * 9 + 5) * 4
  assert np.all(pixels[top:top + 4, left:left + 4] == 255)
  assert pixels[top + 4, left] == 0 and pixels[0, 0] == 128


def test_image_grid_png_rgb(tmp_path):
  path = str(tmp_path / 'rgb.png')
  save_image_grid(path, np.zeros((3, 4, 4, 3), np.float32), ncol=3, scale=2)
  with Image.open(path) as png:
    assert png.mode == 'RGB' and png.size == ((3 * 5 + 1) * 2, (5 + 1) * 2)


def test_scatter_png(tmp_path):
  path = str(tmp_path / 'nested' / 'scatter.png')
  rng = np.random.RandomState(8)
  save_scatter(path, rng.randn(200, 2), reference=rng.randn(300, 2), title='step 0, 1 NFE')
  with Image.open(path) as png:
    assert png.format == 'PNG' and png.size == (400, 400)
    pixels = np.asarray(png.convert('RGB'))
  assert pixels.std() > 0  # Something was drawn.

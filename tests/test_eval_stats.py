"""Feature statistics against the reference computations: streamed mean and covariance equal numpy's over all the
features, the .npz reference format round-trips and refuses foreign files, and the Inception Score equals the
improved-GAN split formula written with scipy's entropy."""
import numpy as np
import pytest
import scipy.special
import scipy.stats

from fewstep_jax.eval import metrics
from fewstep_jax.eval.stats import FeatureStats, inception_score, load_stats, save_stats


def test_streamed_statistics_equal_numpy_over_all_features_even_far_from_zero():
  rng = np.random.RandomState(0)
  # A large common offset: a sum-of-squares formula would lose the covariance to cancellation here.
  features = 1e4 + rng.randn(1000, 16).astype(np.float32) * np.linspace(0.1, 3.0, 16, dtype=np.float32)
  stats = FeatureStats()
  for batch in np.array_split(features, [1, 7, 300, 301, 640]):  # Uneven batches, one of a single row.
    stats.update(batch)
  mu, sigma = stats.mu_sigma()
  np.testing.assert_allclose(mu, features.astype(np.float64).mean(0), rtol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(features.astype(np.float64), rowvar=False), rtol=1e-9, atol=1e-12)
  # Two hosts' accumulators merged are the one accumulator of every feature.
  host0, host1 = FeatureStats().update(features[:450]), FeatureStats().update(features[450:])
  merged_mu, merged_sigma = host0.merge(host1).mu_sigma()
  np.testing.assert_allclose(merged_mu, mu, rtol=1e-12)
  np.testing.assert_allclose(merged_sigma, sigma, rtol=1e-9, atol=1e-12)
  # And the Frechet distance of streamed statistics is that of the whole-array ones.
  other = rng.randn(500, 16) + 1e4
  assert metrics.frechet_distance(mu, sigma, *metrics.gaussian_stats(other)) == pytest.approx(
      metrics.frechet_distance(*metrics.gaussian_stats(features), *metrics.gaussian_stats(other)), rel=1e-6)
  with pytest.raises(ValueError, match='dimension 3 added to statistics of dimension 16'):
    stats.update(np.zeros((2, 3)))


def test_reference_statistics_round_trip_and_foreign_files_are_clear_errors(tmp_path):
  rng = np.random.RandomState(1)
  mu, a = rng.randn(5), rng.randn(5, 5)
  path = str(tmp_path / 'refs' / 'cifar10.npz')
  save_stats(path, mu, a @ a.T)
  got_mu, got_sigma = load_stats(path)
  np.testing.assert_array_equal(got_mu, mu)
  np.testing.assert_array_equal(got_sigma, a @ a.T)
  assert sorted(np.load(path).files) == ['mu', 'sigma']  # The published format, nothing else.
  with pytest.raises(FileNotFoundError, match='no reference statistics at'):
    load_stats(str(tmp_path / 'missing.npz'))
  np.savez(tmp_path / 'other.npz', features=np.zeros((3, 5)))
  with pytest.raises(ValueError, match=r"holds arrays \['features'\], not the reference statistics"):
    load_stats(str(tmp_path / 'other.npz'))
  with pytest.raises(ValueError, match='mu must be'):
    save_stats(path, mu, np.zeros((4, 4)))


def test_inception_score_is_the_split_formula():
  rng = np.random.RandomState(2)
  logits = rng.randn(1000, 10) * 3.0
  probs = scipy.special.softmax(logits, axis=1)
  scores = []
  for part in np.array_split(probs, 10):  # Equal parts here (1000 / 10), as the reference slices them.
    marginal = part.mean(axis=0)
    scores.append(np.exp(np.mean([scipy.stats.entropy(row, marginal) for row in part])))
  mean, std = inception_score(logits, splits=10)
  assert mean == pytest.approx(np.mean(scores), rel=1e-10) and std == pytest.approx(np.std(scores), rel=1e-8)
  # Confident, evenly spread predictions score the number of classes; a constant prediction scores 1.
  assert inception_score(np.eye(10)[np.arange(1000) % 10] * 50.0)[0] == pytest.approx(10.0, rel=1e-6)
  assert inception_score(np.zeros((100, 10)))[0] == pytest.approx(1.0)

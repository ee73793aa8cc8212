"""Distances between two sets of samples: sliced Wasserstein, kernel MMD, and the Frechet distance of Gaussians.

Samples are [N, D] arrays (2-D toy points, or flattened images / classifier features). The sample-based
metrics run in jnp; the Frechet distance works on (mean, covariance) statistics in float64 numpy, where the
matrix square root is numerically delicate.
"""
import jax
import jax.numpy as jnp
import numpy as np


def sliced_wasserstein2(x, y, key, num_projections: int = 256):
  """Squared sliced 2-Wasserstein distance SW_2^2 between the empirical distributions of x and y: [N, D] each.

  Monte Carlo over num_projections directions theta uniform on the unit sphere: the mean over theta of the 1-D
  W_2^2 between the projections, which for equal sample counts is the mean squared difference of the sorted
  projections. Returns a scalar; a shift d of all samples gives E_theta[(theta . d)^2] = |d|^2 / D.
  """
  if x.shape != y.shape:
    raise ValueError(f'sliced_wasserstein2 needs equal sample counts and dimensions, got {x.shape} and {y.shape}')
  directions = jax.random.normal(key, (x.shape[1], num_projections))
  directions = directions / jnp.linalg.norm(directions, axis=0, keepdims=True)
  x_sorted = jnp.sort(x @ directions, axis=0)
  y_sorted = jnp.sort(y @ directions, axis=0)
  return jnp.mean((x_sorted - y_sorted)**2)


def _rbf_kernel(a, b, bandwidths):
  squared_distances = jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None, :] - 2.0 * a @ b.T
  squared_distances = jnp.maximum(squared_distances, 0.0)  # Cancellation can leave tiny negatives.
  return sum(jnp.exp(-squared_distances / (2.0 * h**2)) for h in bandwidths)


def mmd_rbf(x, y, bandwidths=(0.1, 0.2, 0.5, 1.0, 2.0, 5.0)):
  """Unbiased estimate of the squared MMD between x: [N, D] and y: [M, D] (N, M >= 2).

  Kernel: the sum of Gaussian kernels exp(-|a - b|^2 / (2 h^2)) over the bandwidths h, which suit data of unit
  scale (the toy 2-D sets; rescale otherwise). The U-statistic drops the diagonal terms k(x_i, x_i), so it is
  unbiased and can be slightly negative when the two distributions are equal.
  """
  n, m = x.shape[0], y.shape[0]
  k_xx = _rbf_kernel(x, x, bandwidths)
  k_yy = _rbf_kernel(y, y, bandwidths)
  k_xy = _rbf_kernel(x, y, bandwidths)
  within_x = (jnp.sum(k_xx) - jnp.trace(k_xx)) / (n * (n - 1))
  within_y = (jnp.sum(k_yy) - jnp.trace(k_yy)) / (m * (m - 1))
  return within_x + within_y - 2.0 * jnp.mean(k_xy)


def gaussian_stats(features):
  """(mean [F], covariance [F, F]) of features: [N, F], in float64, covariance with the 1 / (N - 1) normalisation."""
  features = np.asarray(features, np.float64)
  return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix):
  """Symmetric square root of a symmetric positive semi-definite matrix; rounding negatives are clipped to 0."""
  eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
  return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
  """Frechet (2-Wasserstein squared) distance between N(mu1, cov1) and N(mu2, cov2):

  |mu1 - mu2|^2 + tr(cov1) + tr(cov2) - 2 tr((cov1^(1/2) cov2 cov1^(1/2))^(1/2)).

  The cross term uses the symmetric form, whose matrix is PSD, so its square root comes from a symmetric
  eigendecomposition with real, clipped eigenvalues; the general sqrtm(cov1 cov2) of FID code returns complex
  parts and fails on the singular covariances of ReLU features.
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
  sqrt_cov1 = _psd_sqrt(cov1)
  cross = sqrt_cov1 @ cov2 @ sqrt_cov1
  cross_eigenvalues = np.linalg.eigvalsh((cross + cross.T) / 2.0)
  trace_sqrt_cross = np.sum(np.sqrt(np.clip(cross_eigenvalues, 0.0, None)))
  distance = np.sum((mu1 - mu2)**2) + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt_cross
  return float(max(distance, 0.0))  # Rounding alone can push identical statistics a hair below zero.

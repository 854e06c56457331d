"""Survey distances against float64 NumPy/SciPy references."""

import jax
import numpy as np
import pytest
import scipy.linalg

import gapmmd_jax as g


def data(seed=0, n=50, m=40, d=6):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
  y = rng.normal(size=(m, d)) @ rng.normal(size=(d, d)) + 0.7
  return x.astype(np.float32), y.astype(np.float32)


def pooled_cov(x, y):
  x, y = x.astype(np.float64), y.astype(np.float64)
  xc, yc = x - x.mean(0), y - y.mean(0)
  return (xc.T @ xc + yc.T @ yc) / (len(x) + len(y) - 2)


def test_euclidean():
  x, y = data()
  np.testing.assert_allclose(
    g.euclidean_distance(x, y), np.linalg.norm(x.mean(0, dtype=np.float64) - y.mean(0)), rtol=1e-5
  )


def test_standardized_euclidean():
  x, y = data(1)
  diff = x.mean(0, dtype=np.float64) - y.mean(0)
  expected = np.sqrt(np.sum(diff**2 / np.diag(pooled_cov(x, y))))
  np.testing.assert_allclose(g.standardized_euclidean_distance(x, y), expected, rtol=1e-5)


@pytest.mark.parametrize("shrinkage", [0.0, 0.1])
def test_mahalanobis(shrinkage):
  x, y = data(2)
  cov = pooled_cov(x, y)
  cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / 6 * np.eye(6)
  diff = x.mean(0, dtype=np.float64) - y.mean(0)
  expected = np.sqrt(diff @ np.linalg.solve(cov, diff))
  np.testing.assert_allclose(g.mahalanobis_distance(x, y, shrinkage=shrinkage), expected, rtol=2e-3)


def test_mahalanobis_singular_covariance_stays_finite():
  x, y = data(3, n=4, m=4, d=10)  # d > n + m - 2: pooled covariance is singular
  assert np.isfinite(g.mahalanobis_distance(x, y))


def test_cosine():
  x, y = data(4)
  a, b = x.mean(0, dtype=np.float64), y.mean(0, dtype=np.float64)
  np.testing.assert_allclose(
    g.cosine_distance(x, y), 1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b), rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(g.cosine_distance(np.zeros((3, 2)), y[:, :2]), 1.0)


@pytest.mark.parametrize("rank", [1, 3])
def test_grassmann_matches_scipy_subspace_angles(rank):
  x, y = data(5)
  basis = lambda a: np.linalg.svd(a - a.mean(0), full_matrices=False)[2][:rank].T
  angles = scipy.linalg.subspace_angles(basis(x.astype(np.float64)), basis(y.astype(np.float64)))
  np.testing.assert_allclose(
    g.grassmann_distance(x, y, rank=rank), np.sqrt(np.sum(angles**2)), rtol=1e-3, atol=1e-3
  )


def test_distances_are_zero_on_identical_sets_and_symmetric():
  x, y = data(6)
  for fn in (
    g.euclidean_distance,
    g.standardized_euclidean_distance,
    g.mahalanobis_distance,
    g.cosine_distance,
    g.grassmann_distance,
  ):
    assert float(fn(x, x)) == pytest.approx(0.0, abs=2e-3), fn.__name__
    np.testing.assert_allclose(fn(x, y), fn(y, x), rtol=1e-4, err_msg=fn.__name__)
    assert np.isfinite(jax.jit(fn)(x, y))


def test_distance_errors():
  x, y = data(7)
  with pytest.raises(ValueError, match="same feature dimension"):
    g.euclidean_distance(x, y[:, :3])
  with pytest.raises(ValueError, match="rank=9 exceeds"):
    g.grassmann_distance(x, y, rank=9)
  with pytest.raises(ValueError, match="shrinkage"):
    g.mahalanobis_distance(x, y, shrinkage=2.0)

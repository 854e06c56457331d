"""Distances between two feature sets, for the survey of class gaps.

Each takes two sample sets ``x`` ``[n, d]`` and ``y`` ``[m, d]`` and returns
one scalar; larger means further apart.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gapmmd_jax import _validation as v


def euclidean_distance(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike) -> jax.Array:
  r"""Distance between the means: :math:`\|\bar x - \bar y\|_2`.

  Args:
    x: ``[n, d]`` samples.
    y: ``[m, d]`` samples.

  Returns:
    Scalar.

  Example:
    >>> import jax.numpy as jnp
    >>> from gapmmd_jax import euclidean_distance
    >>> x, y = jnp.zeros((4, 2)), jnp.tile(jnp.array([3.0, 4.0]), (3, 1))
    >>> float(euclidean_distance(x, y))  # between the means
    5.0
  """
  x, y = v.check_samples("x", x, "y", y)
  return jnp.linalg.norm(jnp.mean(x, axis=0) - jnp.mean(y, axis=0))


def _pooled_covariance(x: jax.Array, y: jax.Array) -> jax.Array:
  n, m = x.shape[0], y.shape[0]
  xc = x - jnp.mean(x, axis=0)
  yc = y - jnp.mean(y, axis=0)
  return (xc.T @ xc + yc.T @ yc) / max(n + m - 2, 1)


def standardized_euclidean_distance(
  x: jax.typing.ArrayLike, y: jax.typing.ArrayLike, *, eps: float = 1e-12
) -> jax.Array:
  r"""Mean difference scaled per feature by the pooled variance.

  .. math:: \sqrt{\textstyle\sum_k (\bar x_k - \bar y_k)^2 / (s_k^2 + \epsilon)}

  Args:
    x: ``[n, d]`` samples.
    y: ``[m, d]`` samples.
    eps: added to each pooled variance ``s_k^2`` (pooled over both samples, ``n + m - 2``
      degrees of freedom).

  Returns:
    Scalar; features with zero pooled variance count as ``0 / eps``.

  Example:
    >>> import jax.numpy as jnp
    >>> from gapmmd_jax import standardized_euclidean_distance
    >>> x = jnp.array([[0.0, 0.0], [2.0, 10.0]])
    >>> y = jnp.array([[4.0, 0.0], [6.0, 10.0]])  # pooled variances 2 and 50
    >>> float(standardized_euclidean_distance(x, y))  # 4 / sqrt(2): the first feature's
    2.828
  """
  x, y = v.check_samples("x", x, "y", y, min_rows=2)
  var = jnp.diagonal(_pooled_covariance(x, y))
  diff = jnp.mean(x, axis=0) - jnp.mean(y, axis=0)
  return jnp.sqrt(jnp.sum(diff * diff / (var + eps)))


def mahalanobis_distance(
  x: jax.typing.ArrayLike, y: jax.typing.ArrayLike, *, shrinkage: float = 1e-3
) -> jax.Array:
  r"""Mahalanobis distance of the means under the shrunk pooled covariance.

  .. math:: \sqrt{(\bar x-\bar y)^T \Sigma_\alpha^{-1} (\bar x-\bar y)},\quad
     \Sigma_\alpha = (1-\alpha)\Sigma + \alpha\,\tfrac{\mathrm{tr}\Sigma}{d} I

  The shrinkage ``alpha`` keeps ``Sigma`` invertible when ``d`` exceeds the
  sample size or features are collinear.

  Args:
    x: ``[n, d]`` samples.
    y: ``[m, d]`` samples.
    shrinkage: ``alpha`` in ``[0, 1]``, towards the scaled identity.

  Returns:
    Scalar.

  References:
    Mahalanobis, "On the generalised distance in statistics", 1936; the shrinkage
    target as in Ledoit & Wolf, "A well-conditioned estimator for large-dimensional
    covariance matrices", J. Multivariate Anal. 2004 (a fixed ``alpha`` here, not
    their estimated one).

  Example:
    >>> import jax
    >>> from gapmmd_jax import mahalanobis_distance
    >>> x = jax.random.normal(jax.random.key(0), (500, 3))
    >>> round(float(mahalanobis_distance(x, x + 1.0)), 1)  # sqrt(3) for unit covariance
    1.7
  """
  x, y = v.check_samples("x", x, "y", y, min_rows=2)
  if not 0.0 <= shrinkage <= 1.0:
    raise ValueError(f"shrinkage must lie in [0, 1], got {shrinkage}.")
  cov = _pooled_covariance(x, y)
  d = cov.shape[0]
  scale = jnp.maximum(jnp.trace(cov) / d, jnp.finfo(cov.dtype).tiny)
  cov = (1.0 - shrinkage) * cov + shrinkage * scale * jnp.eye(d, dtype=cov.dtype)
  diff = jnp.mean(x, axis=0) - jnp.mean(y, axis=0)
  solved = jax.scipy.linalg.solve(cov, diff, assume_a="pos")
  return jnp.sqrt(jnp.maximum(diff @ solved, 0.0))


def cosine_distance(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike) -> jax.Array:
  r"""One minus the cosine similarity of the means, in ``[0, 2]``.

  .. math:: 1 - \bar x \cdot \bar y / (\|\bar x\| \|\bar y\|)

  Args:
    x: ``[n, d]`` samples.
    y: ``[m, d]`` samples.

  Returns:
    Scalar (1 when a mean is the zero vector).

  Example:
    >>> import jax.numpy as jnp
    >>> from gapmmd_jax import cosine_distance
    >>> x = jnp.array([[1.0, 0.0], [3.0, 0.0]])  # mean (2, 0)
    >>> float(cosine_distance(x, jnp.array([[0.0, 1.0]])))  # orthogonal means
    1.0
  """
  x, y = v.check_samples("x", x, "y", y)
  a, b = jnp.mean(x, axis=0), jnp.mean(y, axis=0)
  norms = jnp.linalg.norm(a) * jnp.linalg.norm(b)
  similarity = jnp.where(norms > 0, a @ b / jnp.where(norms > 0, norms, 1.0), 0.0)
  return v.nan_unless_finite(1.0 - similarity, x, y)


def grassmann_distance(
  x: jax.typing.ArrayLike, y: jax.typing.ArrayLike, *, rank: int = 5
) -> jax.Array:
  r"""Geodesic distance between the ``rank``-dim principal subspaces.

  With orthonormal bases ``U_x, U_y`` ``[d, rank]`` (top right singular
  vectors of the centred samples), the principal angles are
  ``theta = arccos(svd(U_x^T U_y))`` and

  .. math:: d_G = \sqrt{\textstyle\sum_i \theta_i^2}

  Args:
    x: ``[n, d]`` samples.
    y: ``[m, d]`` samples.
    rank: dimension of each subspace, at most ``min(n, m, d)``.

  Returns:
    Scalar in ``[0, rank^{1/2} pi / 2]``.

  References:
    Hamm & Lee, "Grassmann discriminant analysis", ICML 2008.

  Example:
    Two samples spread along the same 2 directions are close, whatever their means:

    >>> import jax
    >>> from gapmmd_jax import grassmann_distance
    >>> basis = jax.random.normal(jax.random.key(0), (2, 6))
    >>> x = jax.random.normal(jax.random.key(1), (50, 2)) @ basis
    >>> y = jax.random.normal(jax.random.key(2), (50, 2)) @ basis + 5.0
    >>> float(grassmann_distance(x, y, rank=2)) < 1e-2
    True
  """
  x, y = v.check_samples("x", x, "y", y)
  v.check_int("rank", rank, 1)
  if rank > min(x.shape[0], y.shape[0], x.shape[1]):
    raise ValueError(
      f"rank={rank} exceeds min(n, m, d) for x.shape={tuple(x.shape)}, y.shape={tuple(y.shape)}."
    )

  def basis(a):
    _, _, vt = jnp.linalg.svd(a - jnp.mean(a, axis=0), full_matrices=False)
    return vt[:rank].T

  cosines = jnp.linalg.svd(basis(x).T @ basis(y), compute_uv=False)
  angles = jnp.arccos(jnp.clip(cosines, 0.0, 1.0))
  return jnp.sqrt(jnp.sum(angles * angles))

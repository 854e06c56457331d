"""Kernel two-sample tests over a collection of kernels, on the tiled quadratic-form engine."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from gapmmd_jax import _validation as v
from gapmmd_jax.losses import _kernels
from gapmmd_jax.losses._mmd import (
    _chunked_rows,
    _permutation_coefficients,
    as_typed_key,
    permutation_indicators,
)

FUSE_KERNELS = ("gaussian", "laplace")
# Pairwise distances for the bandwidth grid come from at most this many points.
_BANDWIDTH_MAX_POINTS = 2048


def _pairwise(z: jax.Array, norm: str) -> jax.Array:
  """``[N, N]`` L1 or L2 distances (small ``N`` only: the bandwidth subsample)."""
  if norm == "l1":
    return jnp.sum(jnp.abs(z[:, None, :] - z[None, :, :]), axis=-1)
  sq = _kernels.squared_distances(z, z)  # its diagonal is rounding error: make it exactly 0
  return jnp.sqrt(jnp.where(jnp.eye(z.shape[0], dtype=bool), 0.0, sq))


def bandwidth_grid(z: jax.Array, norm: str, num: int) -> jax.Array:
  """``[num]`` bandwidths, evenly spaced from half the 5% quantile to twice the 95% quantile
  of the pairwise ``norm`` distances of ``z`` ``[N, d]`` (MMD-FUSE's grid).

  As MMD-FUSE, the pairs ``i <= j`` count, the zero distances (a point and
  itself, duplicates) replaced by the median. Above 2048 points an evenly
  strided subset of 2048 is used, so memory stays bounded; at most 2048 points
  this is MMD-FUSE's grid exactly.
  """
  n = z.shape[0]
  if n > _BANDWIDTH_MAX_POINTS:
    z = z[:: math.ceil(n / _BANDWIDTH_MAX_POINTS)]
  ordered = jnp.sort(_pairwise(z, norm)[np.triu_indices(z.shape[0])])
  size = ordered.shape[0]
  median = (ordered[(size - 1) // 2] + ordered[size // 2]) / 2
  # Order statistics after the zeros (the first `zeros` entries) become the median,
  # read off the one sort: below the median's block, in it, or after it.
  zeros = jnp.sum(ordered == 0)
  below = jnp.sum(ordered < median) - zeros  # non-zero entries below the median

  def order_statistic(position: int) -> jax.Array:
    return jnp.where(position < below, ordered[jnp.minimum(zeros + position, size - 1)],
                     jnp.where(position < below + zeros, median, ordered[position]))

  low = order_statistic(int(math.floor(size * 0.05))) / 2
  high = order_statistic(int(math.floor(size * 0.95))) * 2
  # Mostly identical points give zero bandwidths: keep them positive (and their squares
  # normal floats) so that the kernels stay finite.
  return jnp.maximum(jnp.linspace(low, high, num), 1e-18)


def mmd_fuse(key: jax.Array, x: jax.typing.ArrayLike, y: jax.typing.ArrayLike, *,
             num_permutations: int = 2000, kernels: tuple[str, ...] = ("laplace", "gaussian"),
             num_bandwidths: int = 10, lambda_multiplier: float = 1.0,
             chunk_size: int | None = None, block_size: int | None = None
             ) -> tuple[jax.Array, jax.Array]:
  r"""MMD-FUSE (Biggs, Schrab and Gretton, NeurIPS 2023): a permutation test of the soft
  maximum of normalised MMD estimates over a collection of kernels, in tiles.

  For each kernel ``k`` of the collection (``num_bandwidths`` bandwidths of
  each of ``kernels``, on the grid of :func:`bandwidth_grid`) the unbiased
  estimate is normalised by its permutation-invariant scale,

  .. math:: M_k = n (n - 1) \sqrt{n (n - 1)}\; \widehat{\mathrm{MMD}}^2_{u,k} \Big/
     \sqrt{\textstyle\sum_{i \ne j} k(z_i, z_j)^2},
     \qquad \mathrm{FUSE} = \log \frac{1}{K} \sum_k e^{\lambda M_k}

  (``n`` the smaller sample size, ``z`` the pooled sample, ``lambda`` =
  ``lambda_multiplier``), and the p-value is that of the permutation test,
  ``(1 + #{b: FUSE_b >= FUSE}) / (1 + B)``. Every kernel's statistic of every
  permutation is a quadratic form walked through the pooled kernel tiles
  together (:func:`~gapmmd_jax.losses._kernels.bank_quadratic_forms`), so no
  ``[N, N]`` matrix is held: memory ``O(N d + chunk N)``, time ``O(N^2 (d + K
  B))``. Differs from the authors' code only in the permutations' random
  numbers and, above 2048 points, in taking the bandwidth grid from a subset.

  Args:
    key: PRNG key (``jax.random.key`` or a legacy ``jax.random.PRNGKey``).
    x: ``[n, d]``, ``y``: ``[m, d]``, at least 2 rows each.
    num_permutations: ``B``.
    kernels: any of ``"gaussian"`` (L2) and ``"laplace"`` (L1).
    num_bandwidths: bandwidths per kernel, at least 2.
    lambda_multiplier: ``lambda`` of the soft maximum, > 0.
    chunk_size: permutations per walk over the tiles; ``None``: as
      :func:`mmd_test` (up to 16M coefficients at once).
    block_size: tile side; ``None``: 256.

  Returns:
    ``(statistic, p_value)``, two scalars.

  Example:
    >>> statistic, p = mmd_fuse(jax.random.key(0), x, y)  # doctest: +SKIP
  """
  x, y = v.check_samples("x", x, "y", y)
  if min(x.shape[0], y.shape[0]) < 2:
    raise ValueError(f"mmd_fuse needs at least 2 rows in x and in y, got x.shape="
                     f"{tuple(x.shape)}, y.shape={tuple(y.shape)}.")
  v.check_int("num_permutations", num_permutations, 1)
  v.check_int("num_bandwidths", num_bandwidths, 2)
  v.check_positive("lambda_multiplier", lambda_multiplier)
  kernels = (kernels,) if isinstance(kernels, str) else tuple(kernels)
  if not kernels or len(set(kernels)) != len(kernels):
    raise ValueError(f"kernels must be distinct names of {FUSE_KERNELS}, got {kernels}.")
  for name in kernels:
    v.check_choice("kernels", name, FUSE_KERNELS)
  key = as_typed_key(key)
  n, m = x.shape[0], y.shape[0]
  pooled = jnp.concatenate([x, y], axis=0)
  pooled = pooled - jnp.mean(pooled, axis=0)
  empty = jnp.zeros((0,), pooled.dtype)
  bank = _kernels.KernelBank(
      bandwidth_grid(pooled, "l2", num_bandwidths) if "gaussian" in kernels else empty,
      bandwidth_grid(pooled, "l1", num_bandwidths) if "laplace" in kernels else empty)

  in_x = jnp.concatenate([(jnp.arange(n + m) < n)[None],
                          permutation_indicators(key, n, m, num_permutations)])
  coefficients, gamma = _permutation_coefficients(in_x.astype(pooled.dtype), n, m, "unbiased")
  coefficients = jnp.concatenate([coefficients, jnp.ones((1, n + m), pooled.dtype)])
  forms, squares = _chunked_rows(
      lambda c: _kernels.bank_quadratic_forms(pooled, c, bank, block_size=block_size),
      coefficients, chunk_size, per_row_axis=1)
  estimates = forms[:, :-1] + gamma * forms[:, -1:]  # [K, B + 1] unbiased MMD^2
  small = float(min(n, m))
  scale = small * (small - 1) * math.sqrt(small * (small - 1))
  # A kernel that is 0 off the diagonal (all points apart at a tiny bandwidth) has no
  # estimate to normalise: it contributes 0.
  norms = jnp.sqrt(jnp.where(squares > 0, squares, 1.0))[:, None]
  normalised = jnp.where(squares[:, None] > 0, scale * estimates / norms, 0.0)
  fused = jax.nn.logsumexp(lambda_multiplier * normalised, axis=0,
                           b=1.0 / normalised.shape[0])  # [B + 1]
  observed, null = fused[0], fused[1:]
  return observed, (1.0 + jnp.sum(null >= observed)) / (1.0 + num_permutations)

"""Kernel two-sample tests over a collection of kernels, on the tiled quadratic-form engine."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from gapmmd_jax import _validation as v
from gapmmd_jax.losses import _kernels
from gapmmd_jax.losses._mmd import (
  as_typed_key,
  chunked_rows,
  signed_rows,
  split_rows,
)
from gapmmd_jax.losses._test_result import TwoSampleResult

KernelFamily = Literal["gaussian", "laplace"]
AggWeights = Literal["uniform", "decreasing", "increasing", "centred"]
FUSE_KERNELS = ("gaussian", "laplace")
AGG_KERNELS = FUSE_KERNELS
AGG_WEIGHTS = ("uniform", "decreasing", "increasing", "centred")
# Pairwise distances for the bandwidth grid come from at most this many points.
_BANDWIDTH_MAX_POINTS = 2048
# MMDAgg's geometric grid: from the distances between the first 500 rows of x and of y.
_AGG_BANDWIDTH_MAX_POINTS = 500


def _pairwise(z: jax.Array, norm: str) -> jax.Array:
  """``[N, N]`` L1 or L2 distances (small ``N`` only: the bandwidth subsample)."""
  if norm == "l1":
    return jnp.sum(jnp.abs(z[:, None, :] - z[None, :, :]), axis=-1)
  sq = _kernels.squared_distances(z, z)  # its diagonal is rounding error: make it exactly 0
  return jnp.sqrt(jnp.where(jnp.eye(z.shape[0], dtype=bool), 0.0, sq))


def _check_kernel_names(kernels) -> tuple[KernelFamily, ...]:
  kernels = (kernels,) if isinstance(kernels, str) else tuple(kernels)
  if not kernels or len(set(kernels)) != len(kernels):
    raise ValueError(f"kernels must be distinct names of {FUSE_KERNELS}, got {kernels}.")
  for name in kernels:
    v.check_choice("kernels", name, FUSE_KERNELS)
  return kernels


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
    return jnp.where(
      position < below,
      ordered[jnp.minimum(zeros + position, size - 1)],
      jnp.where(position < below + zeros, median, ordered[position]),
    )

  low = order_statistic(math.floor(size * 0.05)) / 2
  high = order_statistic(math.floor(size * 0.95)) * 2
  # Mostly identical points give zero bandwidths: keep them positive (and their squares
  # normal floats) so that the kernels stay finite.
  return jnp.maximum(jnp.linspace(low, high, num), 1e-18)


@v.renamed_keywords(num_permutations="num_draws")
def mmd_fuse(
  key: jax.Array,
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  *,
  num_draws: int = 2000,
  alpha: float = 0.05,
  kernels: tuple[KernelFamily, ...] = ("laplace", "gaussian"),
  num_bandwidths: int = 10,
  lambda_multiplier: float = 1.0,
  chunk_size: int | None = None,
  block_size: int | None = None,
) -> TwoSampleResult:
  r"""MMD-FUSE (Biggs, Schrab and Gretton, NeurIPS 2023): a permutation test of the soft
  maximum of normalised MMD estimates over a collection of kernels, in tiles.

  For each kernel ``k`` of the collection (``num_bandwidths`` bandwidths of
  each of ``kernels``, evenly spaced from half the 5% quantile to twice the 95%
  quantile of the pooled sample's pairwise L2 or L1 distances, as MMD-FUSE's grid) the
  unbiased estimate is normalised by its permutation-invariant scale,

  .. math:: M_k = n (n - 1) \sqrt{n (n - 1)}\; \widehat{\mathrm{MMD}}^2_{u,k} \Big/
     \sqrt{\textstyle\sum_{i \ne j} k(z_i, z_j)^2},
     \qquad \mathrm{FUSE} = \log \frac{1}{K} \sum_k e^{\lambda M_k}

  (``n`` the smaller sample size, ``z`` the pooled sample, ``lambda`` =
  ``lambda_multiplier``), and the p-value is that of the permutation test,
  ``(1 + #{b: FUSE_b >= FUSE}) / (1 + B)``. Every kernel's statistic of every
  permutation is a quadratic form walked through the pooled kernel tiles
  together (the docs' "How the MMD engine works"), so no ``[N, N]`` matrix is held: memory ``O(N d + chunk N)``, time ``O(N^2 (d + K
  B))``. Differs from the authors' code only in the permutations' random
  numbers and, above 2048 points, in taking the bandwidth grid from a subset.
  Rows sharded over an explicit mesh split the tiles over its devices (as
  :func:`~gapmmd_jax.mmd_test`).

  Args:
    key: PRNG key (``jax.random.key`` or a legacy ``jax.random.PRNGKey``).
    x: ``[n, d]``, ``y``: ``[m, d]``, at least 2 rows each.
    num_draws: ``B``, permutations (the authors' default, 2000). Called
      ``num_permutations`` before version 0.2 (still accepted, with a warning).
    alpha: level of ``reject``, in (0, 1).
    kernels: any of ``"gaussian"`` (L2) and ``"laplace"`` (L1).
    num_bandwidths: bandwidths per kernel, at least 2.
    lambda_multiplier: ``lambda`` of the soft maximum, > 0.
    chunk_size: permutations per walk over the tiles; ``None``: as
      :func:`mmd_test` (up to 32M coefficients at once).
    block_size: tile side; ``None``: 256.

  Returns:
    :class:`~gapmmd_jax.TwoSampleResult` with ``statistic``, ``p_value`` and ``reject``;
    the numbers NaN and ``reject`` False under ``jit`` when ``x`` or ``y`` holds a NaN or
    an infinity (an eager call raises ``ValueError``).

  References:
    Biggs, Schrab & Gretton, "MMD-FUSE: Learning and Combining Kernels for
    Two-Sample Testing Without Data Splitting", NeurIPS 2023.

  Example:
    >>> import jax
    >>> from gapmmd_jax import mmd_fuse
    >>> x = jax.random.normal(jax.random.key(0), (128, 8))
    >>> y = jax.random.normal(jax.random.key(1), (100, 8)) + 1.0
    >>> result = mmd_fuse(jax.random.key(2), x, y)
    >>> bool(result.reject), float(result.p_value)  # no permutation reached it: 1 / 2001
    (True, 0.0005)
  """
  x, y = v.check_samples("x", x, "y", y)
  if min(x.shape[0], y.shape[0]) < 2:
    raise ValueError(
      f"mmd_fuse needs at least 2 rows in x and in y, got x.shape="
      f"{tuple(x.shape)}, y.shape={tuple(y.shape)}."
    )
  v.check_int("num_draws", num_draws, 1)
  v.check_level("alpha", alpha)
  v.check_int("num_bandwidths", num_bandwidths, 2)
  v.check_positive("lambda_multiplier", lambda_multiplier)
  v.check_tiling(chunk_size=chunk_size, block_size=block_size)
  kernels = _check_kernel_names(kernels)
  statistic, p_value = _mmd_fuse(
    as_typed_key(key),
    x,
    y,
    lambda_multiplier,
    num_permutations=num_draws,
    kernels=kernels,
    num_bandwidths=num_bandwidths,
    chunk_size=chunk_size,
    block_size=block_size,
  )
  return TwoSampleResult(statistic, p_value, p_value <= alpha)


@functools.partial(
  jax.jit,
  static_argnames=("num_permutations", "kernels", "num_bandwidths", "chunk_size", "block_size"),
)
def _mmd_fuse(
  key, x, y, lambda_multiplier, *, num_permutations, kernels, num_bandwidths, chunk_size, block_size
) -> tuple[jax.Array, jax.Array]:
  n, m = x.shape[0], y.shape[0]
  mesh = _kernels.explicit_mesh(x, y)  # the tiles are split over its devices
  pooled = jnp.concatenate([_kernels.replicated(x), _kernels.replicated(y)], axis=0)
  pooled = pooled - jnp.mean(pooled, axis=0)
  empty = jnp.zeros((0,), pooled.dtype)
  bank = _kernels.KernelBank(
    bandwidth_grid(pooled, "l2", num_bandwidths) if "gaussian" in kernels else empty,
    bandwidth_grid(pooled, "l1", num_bandwidths) if "laplace" in kernels else empty,
  )

  make_rows, count, gamma = split_rows(key, n, m, num_permutations, "unbiased", pooled.dtype)
  forms, squares = chunked_rows(
    lambda c: _kernels.bank_quadratic_forms(pooled, c, bank, block_size=block_size, mesh=mesh),
    make_rows,
    count,
    n + m,
    chunk_size,
    per_row_axis=1,
  )
  estimates = forms[:, :-1] + gamma * forms[:, -1:]  # [K, B + 1] unbiased MMD^2
  small = float(min(n, m))
  scale = small * (small - 1) * math.sqrt(small * (small - 1))
  # A kernel that is 0 off the diagonal (all points apart at a tiny bandwidth) has no
  # estimate to normalise: it contributes 0.
  norms = jnp.sqrt(jnp.where(squares > 0, squares, 1.0))[:, None]
  normalised = jnp.where(squares[:, None] > 0, scale * estimates / norms, 0.0)
  fused = jax.nn.logsumexp(
    lambda_multiplier * normalised, axis=0, b=1.0 / normalised.shape[0]
  )  # [B + 1]
  observed, null = fused[0], fused[1:]
  p_value = (1.0 + jnp.sum(null >= observed)) / (1.0 + num_permutations)
  return v.nan_unless_finite((observed, p_value), x, y)


def geometric_bandwidths(x: jax.Array, y: jax.Array, norm: str, num: int) -> jax.Array:
  """``[num]`` bandwidths on MMDAgg's geometric grid from the ``norm`` distances between x and y.

  The distances ``|x_i - y_j|``, ``i >= j``, among the first 500 rows of each
  (zeros replaced by their median) give ``lo``: half their 5% quantile, at
  least 0.05, when some distance is below 0.1, else half the smallest; and
  ``hi``: twice the largest, at least 0.6. The grid is ``lo (hi / lo)^(r / (num
  - 1))``, ``r = 0 .. num - 1`` (Schrab et al. 2023, Section 5.2 and their code).
  """
  xs, ys = x[:_AGG_BANDWIDTH_MAX_POINTS], y[:_AGG_BANDWIDTH_MAX_POINTS]
  # Exact differences (no matmul cancellation near 0), one row of y at a time: O(500 d) memory.
  if norm == "l1":
    cross = jax.lax.map(lambda row: jnp.sum(jnp.abs(row - xs), axis=-1), ys)
  else:
    cross = jax.lax.map(lambda row: jnp.sqrt(jnp.sum(jnp.square(row - xs), axis=-1)), ys)
  rows, cols = np.triu_indices(ys.shape[0], m=xs.shape[0])  # [j, i] with i >= j
  distances = cross[rows, cols]
  distances = jnp.where(distances == 0, jnp.median(distances), distances)
  ordered = jnp.sort(distances)
  low = (
    jnp.where(
      ordered[0] < 0.1, jnp.maximum(ordered[math.floor(ordered.shape[0] * 0.05)], 0.1), ordered[0]
    )
    / 2
  )
  high = jnp.maximum(ordered[-1], 0.3) * 2
  return low * (high / low) ** (jnp.arange(num, dtype=distances.dtype) / (num - 1))


def aggregation_weights(num: int, kind: str) -> np.ndarray:
  """``[num]`` weights of MMDAgg's bandwidths, summing to 1 (Schrab et al. 2023, Section 5.1).

  ``"uniform"`` ``1 / num``; ``"decreasing"`` proportional to ``1 / r``;
  ``"increasing"`` to ``1 / (num + 1 - r)``; ``"centred"`` to ``1 / (|(num +
  1) / 2 - r| + 1)`` (odd ``num``) or ``1 / (|(num + 1) / 2 - r| + 1/2)``
  (even), ``r = 1 .. num``.
  """
  v.check_choice("weights", kind, AGG_WEIGHTS)
  r = np.arange(1, num + 1, dtype=np.float64)
  middle = abs((num + 1) / 2 - r)
  raw = {
    "uniform": np.ones(num),
    "decreasing": 1 / r,
    "increasing": 1 / (num + 1 - r),
    "centred": 1 / (middle + (1.0 if num % 2 else 0.5)),
  }[kind]
  return raw / raw.sum()


def _agg_statistics(key, x, y, draws, num, bank, method, chunk_size, block_size, mesh=None):
  """``[K, 1 + num]`` unbiased MMD^2 of every kernel of ``bank``: observed first, then the
  draws (from ``key``, or the rows of ``draws``); the tiles split over ``mesh``'s devices."""
  n, m = x.shape[0], y.shape[0]
  pooled_mean = (jnp.sum(x, axis=0) + jnp.sum(y, axis=0)) / (n + m)
  x, y = x - pooled_mean, y - pooled_mean
  if method == "wild-bootstrap":
    forms = chunked_rows(
      lambda e: _kernels.bank_paired_forms(x, y, e, bank, block_size=block_size, mesh=mesh),
      signed_rows(key, n, num, x.dtype, draws),
      num + 1,
      n,
      chunk_size,
      per_row_axis=1,
    )
    return forms / (n * (n - 1.0))
  make_rows, count, gamma = split_rows(key, n, m, num, "unbiased", x.dtype, draws)
  pooled = jnp.concatenate([x, y])
  forms, _ = chunked_rows(
    lambda c: _kernels.bank_quadratic_forms(pooled, c, bank, block_size=block_size, mesh=mesh),
    make_rows,
    count,
    n + m,
    chunk_size,
    per_row_axis=1,
  )
  return forms[:, :-1] + gamma * forms[:, -1:]


def mmd_agg(
  key: jax.Array,
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  *,
  num_draws: int = 2000,
  alpha: float = 0.05,
  kernels: tuple[KernelFamily, ...] = ("laplace", "gaussian"),
  num_bandwidths: int = 10,
  weights: AggWeights = "uniform",
  num_correction_draws: int = 2000,
  bisection_steps: int = 50,
  method: Literal["wild-bootstrap", "permutation"] | None = None,
  bandwidths: jax.typing.ArrayLike | None = None,
  draws: jax.typing.ArrayLike | None = None,
  chunk_size: int | None = None,
  block_size: int | None = None,
) -> TwoSampleResult:
  r"""MMDAgg (Schrab, Kim, Albert, Laurent, Guedj and Gretton, JMLR 2023): the aggregated
  MMD test over a collection of kernels, on the tiled quadratic-form engine.

  Each kernel ``k`` of the collection (``num_bandwidths`` bandwidths of each of
  ``kernels`` on MMDAgg's geometric grid, between half the 5% quantile of the distances
  between the first 500 rows of ``x`` and of ``y`` and twice their largest; weights
  ``w_k`` of the ``weights`` kind, Section 5.1 of the paper, divided by the number of
  kernel families) gets
  its unbiased MMD^2 estimate and ``B1 = num_draws`` null draws (a wild
  bootstrap when ``n == m``, else permutations). The level correction ``u*``
  is the largest ``u`` (by ``bisection_steps`` halvings of ``[0, min 1/w]``)
  at which the ``B2 = num_correction_draws`` further draws exceed some
  kernel's ``(1 - u w_k)`` quantile at most a fraction ``alpha`` of the time;
  the test rejects if some kernel's p-value is at most ``u* w_k``.

  Every draw of every kernel is a quadratic form walked through the kernel
  tiles together, so no ``[N, N]`` matrix is held: the wild bootstrap walks
  the ``[n, n]`` paired matrix (a quarter of the pooled one), permutations the pooled
  matrix's upper tiles.
  The draws are made a chunk at a time (draw ``r`` from ``fold_in(key, r)``),
  so memory is ``O(N d + chunk N)``. Follows the authors' code except in the
  draws' random numbers (pass ``draws`` to use others), in float32 rounding,
  and in comparing the correction's level ``count / B2 <= alpha`` exactly (in
  integers; their float32 division can put e.g. 6 / 120 above 0.05). Rows
  sharded over an explicit mesh split the tiles over its devices (as
  :func:`~gapmmd_jax.mmd_test`).

  The overall ``p_value`` is the smallest level at which the aggregated test rejects:
  with ``t = min_k p_k / w_k``, the fraction of the ``B2`` correction draws that exceed
  some kernel's ``(1 - t w_k)`` quantile (the level correction's own count, read at
  ``u = t``), so ``reject`` is ``p_value <= alpha``. ``statistic`` is the paper's decision
  margin, ``max_k (MMD^2_k - q_k)`` with ``q_k`` the corrected quantiles.

  Args:
    key: PRNG key (``jax.random.key`` or a legacy ``jax.random.PRNGKey``).
    x: ``[n, d]``, ``y``: ``[m, d]``, at least 2 rows each.
    num_draws: ``B1``, draws for the quantiles and p-values (2000, the authors' default).
    alpha: level of ``reject`` (and of the level correction), in (0, 1); 0.05 by
      convention.
    kernels: any of ``"laplace"`` (L1 distances) and ``"gaussian"`` (L2), in
      the order of the outputs.
    num_bandwidths: bandwidths per kernel family, at least 2.
    weights: ``"uniform"``, ``"decreasing"``, ``"increasing"`` or ``"centred"``.
    num_correction_draws: ``B2``, draws for the level correction (2000, the authors'
      default); ``p_value`` is a multiple of ``1 / B2``.
    bisection_steps: ``B3``.
    method: ``"wild-bootstrap"`` (``n == m`` only) or ``"permutation"``;
      ``None``: the wild bootstrap when ``n == m``, as MMDAgg.
    bandwidths: ``[num_bandwidths]`` bandwidths ``lambda`` used for every family
      instead of the grid: ``exp(-|a - b|_2^2 / lambda^2)``, ``exp(-|a - b|_1 / lambda)``
      (MMDAgg's convention; :func:`~gapmmd_jax.mk_mmd2`'s ``distance_scales`` are
      ``lambda^2``).
    draws: ``[B1 + B2, n]`` signs (wild bootstrap) or ``[B1 + B2, n + m]`` bool
      rows marking ``n`` points as x (permutations); ``None``: drawn from ``key``.
    chunk_size: draws per walk over the tiles; ``None``: up to 32M
      coefficients at once.
    block_size: tile side; ``None``: 256.

  Returns:
    :class:`~gapmmd_jax.TwoSampleResult`: ``statistic``, ``p_value``, ``reject`` and the
    per-kernel ``p_values``, ``thresholds``, ``statistics``, ``quantiles`` and
    ``bandwidths``; under ``jit``, when ``x`` or ``y`` holds a NaN or an infinity,
    ``reject`` is False and the rest NaN (an eager call raises ``ValueError``).

  References:
    Schrab, Kim, Albert, Laurent, Guedj & Gretton, "MMD Aggregated Two-Sample
    Test", JMLR 2023.

  Example:
    >>> import jax
    >>> from gapmmd_jax import mmd_agg
    >>> x = jax.random.normal(jax.random.key(0), (128, 8))
    >>> y = jax.random.normal(jax.random.key(1), (100, 8)) + 1.0
    >>> result = mmd_agg(jax.random.key(2), x, y)
    >>> bool(result.reject), float(result.p_value), result.p_values.shape  # 2 x 10 kernels
    (True, 0.0, (20,))
  """
  x, y = v.check_samples("x", x, "y", y)
  n, m = x.shape[0], y.shape[0]
  if min(n, m) < 2:
    raise ValueError(
      f"mmd_agg needs at least 2 rows in x and in y, got x.shape="
      f"{tuple(x.shape)}, y.shape={tuple(y.shape)}."
    )
  v.check_level("alpha", alpha)
  kernels = _check_kernel_names(kernels)
  for name, value in (
    ("num_draws", num_draws),
    ("num_correction_draws", num_correction_draws),
    ("bisection_steps", bisection_steps),
  ):
    v.check_int(name, value, 1)
  v.check_tiling(chunk_size=chunk_size, block_size=block_size)
  method = method or ("wild-bootstrap" if n == m else "permutation")
  v.check_choice("method", method, ("wild-bootstrap", "permutation"))
  if method == "wild-bootstrap" and n != m:
    raise ValueError(f"method='wild-bootstrap' needs n == m, got n={n}, m={m}.")
  if bandwidths is not None:
    bandwidths = v.as_float_array("bandwidths", bandwidths)
    if bandwidths.ndim != 1:
      raise ValueError(
        f"bandwidths must have shape [num_bandwidths], got {tuple(bandwidths.shape)}."
      )
    num_bandwidths = bandwidths.shape[0]
  v.check_int("num_bandwidths", num_bandwidths, 2)
  total = num_draws + num_correction_draws
  key = as_typed_key(key)
  if draws is not None:
    draws = jnp.asarray(draws)
    width = n if method == "wild-bootstrap" else n + m
    if draws.shape != (total, width):
      raise ValueError(
        f"draws must have shape [num_draws + num_correction_draws, "
        f"{'n' if width == n else 'n + m'}] = {(total, width)} for "
        f"method={method!r}, got {tuple(draws.shape)}."
      )
  return _mmd_agg(
    key,
    x,
    y,
    bandwidths,
    draws,
    alpha=alpha,
    kernels=kernels,
    num_bandwidths=num_bandwidths,
    weights=weights,
    num_draws=num_draws,
    num_correction_draws=num_correction_draws,
    bisection_steps=bisection_steps,
    method=method,
    chunk_size=chunk_size,
    block_size=block_size,
  )


@functools.partial(
  jax.jit,
  static_argnames=(
    "alpha",
    "kernels",
    "num_bandwidths",
    "weights",
    "num_draws",
    "num_correction_draws",
    "bisection_steps",
    "method",
    "chunk_size",
    "block_size",
  ),
)
def _mmd_agg(
  key,
  x,
  y,
  bandwidths,
  draws,
  *,
  alpha,
  kernels,
  num_bandwidths,
  weights,
  num_draws,
  num_correction_draws,
  bisection_steps,
  method,
  chunk_size,
  block_size,
) -> TwoSampleResult:
  mesh = _kernels.explicit_mesh(x, y)  # the tiles are split over its devices
  x, y = _kernels.replicated(x), _kernels.replicated(y)
  total = num_draws + num_correction_draws
  grids = {
    name: (
      bandwidths
      if bandwidths is not None
      else geometric_bandwidths(x, y, "l1" if name == "laplace" else "l2", num_bandwidths)
    ).astype(x.dtype)
    for name in kernels
  }
  empty = jnp.zeros((0,), x.dtype)
  # The bank's parametrisation: exp(-d2^2 / (2 l^2)) and exp(-sqrt(2) d1 / l).
  bank = _kernels.KernelBank(
    grids["gaussian"] / math.sqrt(2.0) if "gaussian" in grids else empty,
    grids["laplace"] * math.sqrt(2.0) if "laplace" in grids else empty,
  )
  statistics = _agg_statistics(key, x, y, draws, total, bank, method, chunk_size, block_size, mesh)
  bank_order: list[str] = [name for name in ("gaussian", "laplace") if name in kernels]
  order = np.concatenate(
    [np.arange(num_bandwidths) + bank_order.index(name) * num_bandwidths for name in kernels]
  )
  statistics = statistics[order]  # [K, 1 + B1 + B2], the families in the order asked
  weight = jnp.asarray(
    np.tile(aggregation_weights(num_bandwidths, weights) / len(kernels), len(kernels)), x.dtype
  )  # [K]

  result = _aggregate(statistics, weight, alpha, num_draws, bisection_steps)
  result = dataclasses.replace(
    result, bandwidths=jnp.concatenate([grids[name] for name in kernels])
  )
  return v.nan_unless_finite(result, x, y)


def _aggregate(
  statistics: jax.Array, weight: jax.Array, alpha: float, num_draws: int, bisection_steps: int
) -> TwoSampleResult:
  """MMDAgg's decision from ``statistics`` ``[K, 1 + B1 + B2]`` (observed, the ``B1 =
  num_draws`` quantile draws, the correction draws) and the kernels' weights ``[K]``; its
  ``bandwidths`` left empty for the caller."""
  observed = statistics[:, 0]
  ordered = jnp.sort(statistics[:, : num_draws + 1], axis=1)  # observed among the B1 draws
  correction = statistics[:, num_draws + 1 :]

  def quantiles_at(u):
    index = jnp.ceil((num_draws + 1) * (1 - u * weight)).astype(jnp.int32) - 1
    index = jnp.clip(index, 0, num_draws)
    return jnp.take_along_axis(ordered, index[:, None], axis=1)[:, 0]

  # The level, count / B2 <= alpha, compared in integers: XLA divides by multiplying with
  # the reciprocal, which puts 6 / 120 above 0.05 in float32.
  max_exceed = math.floor(alpha * correction.shape[1] * (1 + 1e-12))

  def bisect(_, bounds):
    low, high = bounds
    u = (low + high) / 2
    exceed = jnp.sum(jnp.any(correction > quantiles_at(u)[:, None], axis=0))
    return jnp.where(exceed <= max_exceed, u, low), jnp.where(exceed <= max_exceed, high, u)

  u, _ = jax.lax.fori_loop(
    0, bisection_steps, bisect, (jnp.zeros((), weight.dtype), jnp.min(1.0 / weight))
  )
  p_values = jnp.mean(ordered >= observed[:, None], axis=1)
  thresholds = u * weight
  quantiles = quantiles_at(u)
  # The smallest level that rejects: the correction's exceedance at u = min_k p_k / w_k.
  needed = jnp.min(p_values / weight)
  exceed = jnp.sum(jnp.any(correction > quantiles_at(needed)[:, None], axis=0))
  return TwoSampleResult(
    statistic=jnp.max(observed - quantiles),
    p_value=exceed / correction.shape[1],
    reject=jnp.any(p_values <= thresholds),
    p_values=p_values,
    thresholds=thresholds,
    statistics=observed,
    quantiles=quantiles,
    bandwidths=jnp.zeros((0,), weight.dtype),
  )

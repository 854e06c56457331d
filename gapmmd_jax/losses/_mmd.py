"""Maximum mean discrepancy: estimators, multi-kernel MMD, permutation test."""

from __future__ import annotations

import functools
import math
import warnings
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from gapmmd_jax import _validation as v
from gapmmd_jax.losses import _kernels
from gapmmd_jax.losses._class_matrix import class_pair_matrix
from gapmmd_jax.losses._test_result import TwoSampleResult

Estimator = Literal["biased", "unbiased", "linear"]
BandwidthRule = Literal["mean", "median"]
ESTIMATORS: tuple[Estimator, ...] = ("biased", "unbiased", "linear")
BANDWIDTH_RULES: tuple[BandwidthRule, ...] = ("mean", "median")

# The fixed bank of the Domain Separation Networks code (Bousmalis et al.,
# NeurIPS 2016; tensorflow/models research/domain_adaptation, utils.py): 19
# Gaussians exp(-|a - b|^2 / (2 sigma)) with these sigma and unit weights.
# fmt: off
DSN_SIGMAS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0,
              100.0, 1e3, 1e4, 1e5, 1e6)
# fmt: on
# The same bank as :func:`mk_mmd2`'s ``s`` in ``exp(-|a - b|^2 / s)``, ``s = 2 sigma``:
# ``mk_mmd2(x, y, distance_scales=DSN_DISTANCE_SCALES)`` is DSN's kernel.
DSN_DISTANCE_SCALES = tuple(2.0 * sigma for sigma in DSN_SIGMAS)


def _check_reference_kernel(kernel_mul, kernel_num: int, fix_sigma, bandwidth: str) -> float:
  """Checks the reference kernel's options; returns ``kernel_mul`` as a Python float (it
  sets the bandwidths' ratios, and whether the doubling shortcut applies, at trace time)."""
  v.check_int("kernel_num", kernel_num, 1)
  v.check_choice("bandwidth", bandwidth, BANDWIDTH_RULES)
  if fix_sigma is not None:
    v.check_positive("fix_sigma", fix_sigma)
  concrete = v.concrete_or_none(kernel_mul)
  if concrete is None or concrete.shape != ():
    raise TypeError(f"kernel_mul must be a number known at trace time, got {kernel_mul!r}.")
  v.check_positive("kernel_mul", concrete)
  return float(concrete)


def _reference_kernel(
  pooled: jax.Array,
  *,
  kernel_mul: float,
  kernel_num: int,
  fix_sigma,
  bandwidth: str,
  stop_bandwidth_gradient: bool = False,
) -> _kernels.Kernel:
  """The reference ``mmd_rbf`` kernel: unit weights, geometric bandwidths (options checked by
  :func:`_check_reference_kernel`).

  Args:
    pooled: ``[N, d]``, both samples stacked (the data-driven scale uses them all).
    stop_bandwidth_gradient: treat the data-driven scale as a constant in the
      gradient (as the reference's ``.data`` does).
  """
  if fix_sigma is not None:
    scale = jnp.asarray(fix_sigma, pooled.dtype)
  else:
    if bandwidth == "mean":
      scale = _kernels.mean_squared_distance(pooled)
    else:
      scale = _kernels.median_squared_distance(pooled)
    # Identical points give a zero scale; every distance is then zero too, so
    # any positive bandwidth yields the same (correct) kernel values.
    scale = jnp.where(scale > 0, scale, jnp.ones_like(scale))
    if stop_bandwidth_gradient:
      scale = jax.lax.stop_gradient(scale)
  # Bandwidths scale * kernel_mul^(i - kernel_num // 2): the data-driven scale stays a
  # factor of its own (one gradient sum per tile instead of kernel_num).
  relative = jnp.asarray(
    [kernel_mul ** (kernel_num // 2 - i) for i in range(kernel_num)], pooled.dtype
  )
  return _kernels.Kernel(
    relative,
    jnp.ones((kernel_num,), pooled.dtype),
    doubling=kernel_mul == 2.0,
    inv_scale=1.0 / scale,
  )


def _check_estimator(estimator: str, x: jax.Array, y: jax.Array) -> None:
  v.check_choice("estimator", estimator, ESTIMATORS)
  if estimator == "unbiased" and min(x.shape[0], y.shape[0]) < 2:
    raise ValueError(
      "estimator='unbiased' needs at least 2 rows in x and in y, got "
      f"x.shape={tuple(x.shape)}, y.shape={tuple(y.shape)}."
    )
  if estimator == "linear":
    if x.shape[0] != y.shape[0]:
      raise ValueError(
        "estimator='linear' pairs x_i with y_i and needs n == m, got "
        f"x.shape={tuple(x.shape)}, y.shape={tuple(y.shape)}."
      )
    if x.shape[0] < 2:
      raise ValueError(f"estimator='linear' needs at least 2 rows, got x.shape={tuple(x.shape)}.")


def _linear_terms(x: jax.Array, y: jax.Array, kernel: _kernels.Kernel) -> jax.Array:
  """Per-pair statistics ``h_i`` ``[n // 2]`` of the linear-time estimator."""
  half = x.shape[0] // 2
  x1, x2 = x[0 : 2 * half : 2], x[1 : 2 * half : 2]
  y1, y2 = y[0 : 2 * half : 2], y[1 : 2 * half : 2]

  def k(a, b):
    diff = a - b
    return _kernels.gaussian_kernel(jnp.sum(diff * diff, axis=1), kernel)

  return k(x1, x2) + k(y1, y2) - k(x1, y2) - k(x2, y1)


def _mmd2_with_kernel(
  x: jax.Array, y: jax.Array, kernel: _kernels.Kernel, estimator: str, block_size: int | None
) -> jax.Array:
  if estimator == "linear":
    return jnp.mean(_linear_terms(x, y, kernel))
  # Centring by the pooled mean changes no distance and keeps the one-matmul
  # distance formula accurate in float32.
  centre = (jnp.sum(x, axis=0) + jnp.sum(y, axis=0)) / (x.shape[0] + y.shape[0])
  x, y = x - centre, y - centre
  n, m = float(x.shape[0]), float(y.shape[0])  # n * n overflows int32 from n = 46341
  if n == m and not (_kernels.is_explicitly_sharded(x) or _kernels.is_explicitly_sharded(y)):
    # Paired tiles: the within/between cancellation happens before rounding.
    if estimator == "biased":  # sum_h / n^2
      weights = dict(h_weight=1.0 / (n * n), xy_weight=0.0)
    else:  # (Sxx + Syy) / (n (n-1)) - 2 Sxy / n^2 with Sxx + Syy = sum_h + 2 Sxy
      weights = dict(h_weight=1.0 / (n * (n - 1)), xy_weight=2.0 / (n * n * (n - 1)))
    return _kernels.paired_mmd_statistic(x, y, kernel, block_size=block_size, **weights)
  # The sums are of kernel values minus the peak k(a, a); the shift cancels in
  # both estimators, and the excluded diagonal of the U-statistic is then 0.
  if estimator == "biased":
    weights = dict(xx_weight=1.0 / (n * n), yy_weight=1.0 / (m * m), xy_weight=-2.0 / (n * m))
  else:
    weights = dict(
      xx_weight=1.0 / (n * (n - 1)), yy_weight=1.0 / (m * (m - 1)), xy_weight=-2.0 / (n * m)
    )
  if _kernels.is_explicitly_sharded(x) or _kernels.is_explicitly_sharded(y):
    # Row blocks: every device works on its own rows against all columns.
    total = lambda a, b: _kernels.kernel_sum(a, b, kernel, block_size=block_size)
    return (
      weights["xx_weight"] * total(x, x)
      + weights["yy_weight"] * total(y, y)
      + weights["xy_weight"] * total(x, y)
    )
  return _kernels.pooled_mmd_statistic(x, y, kernel, block_size=block_size, **weights)


def mmd2(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  *,
  kernel_mul: float = 2.0,
  kernel_num: int = 5,
  fix_sigma: float | None = None,
  estimator: Estimator = "biased",
  bandwidth: BandwidthRule = "mean",
  stop_bandwidth_gradient: bool = False,
  block_size: int | None = None,
) -> jax.Array:
  r"""Squared MMD with a sum of Gaussian kernels (the reference ``mmd_rbf``).

  .. math:: k(a, b) = \sum_{i<K} \exp(-\|a-b\|^2 / (\beta\,\mu^i)),\quad
     \beta = S / \mu^{\lfloor K/2 \rfloor}

  with ``mu = kernel_mul``, ``K = kernel_num`` and ``S = fix_sigma`` or, by
  default, the mean squared distance over ordered pairs ``i != j`` of the
  pooled sample (``bandwidth="median"``: the median instead). For ``n == m``
  the biased estimate equals the widely copied PyTorch ``mmd_rbf``; unlike it,
  identical samples give 0 instead of NaN and memory stays ``O((n + m) d)``
  for large inputs.

  Reverse mode only: the tiled sums are a ``jax.custom_vjp``, so ``jax.grad``, ``jax.vjp``
  and ``jax.jacrev`` work and ``jax.jvp``, ``jax.jacfwd`` and ``jax.hessian`` raise
  (``estimator="linear"`` supports both modes).

  Args:
    x: ``[n, d]`` samples of P.
    y: ``[m, d]`` samples of Q (``m`` may differ from ``n``).
    kernel_mul: ratio ``mu`` between consecutive bandwidths.
    kernel_num: number of kernels ``K``.
    fix_sigma: fixed scale ``S`` instead of the data-driven one.
    estimator: ``"biased"`` (V-statistic), ``"unbiased"`` (U-statistic,
      diagonals excluded) or ``"linear"`` (Gretton et al. 2012 linear-time;
      needs ``n == m`` and uses ``n // 2`` pairs, so an odd last row is unused).
    bandwidth: ``"mean"`` (reference) or ``"median"`` rule for ``S``.
    stop_bandwidth_gradient: differentiate with the data-driven ``S`` held
      constant, as the reference does (its ``.data``) and most training code
      (``.detach()``); by default the gradient also flows through ``S``.
      No effect with ``fix_sigma``.
    block_size: rows per block of the kernel sums; ``None`` chooses by size.

  Returns:
    Scalar ``jax.Array`` (float32, or float64 for float64 inputs); NaN under ``jit``
    when ``x`` or ``y`` holds a NaN or an infinity (an eager call raises ``ValueError``).

  References:
    Gretton et al., "A Kernel Two-Sample Test", JMLR 2012.

  Example:
    >>> import jax
    >>> from gapmmd_jax import mmd2
    >>> x = jax.random.normal(jax.random.key(0), (128, 8))
    >>> y = jax.random.normal(jax.random.key(1), (100, 8)) + 1.0
    >>> float(mmd2(x, y, estimator="unbiased"))
    0.932
    >>> grad_x = jax.grad(mmd2)(x, y)  # as a loss: [128, 8], the same tiles walked backward
  """
  x, y = v.check_samples("x", x, "y", y)
  _check_estimator(estimator, x, y)
  v.check_tiling(block_size=block_size)
  kernel_mul = _check_reference_kernel(kernel_mul, kernel_num, fix_sigma, bandwidth)
  return _mmd2(
    x,
    y,
    fix_sigma,
    kernel_mul=kernel_mul,
    kernel_num=kernel_num,
    estimator=estimator,
    bandwidth=bandwidth,
    stop_bandwidth_gradient=bool(stop_bandwidth_gradient),
    block_size=block_size,
  )


# The public functions check their arguments eagerly, then call a compiled core: an eager
# call compiles one program per shape and options instead of dispatching every operation
# (mmd2 of [1000, 64] samples 0.18 s -> 0.005 s a call on 2 CPU cores, README), and inside
# a caller's jit the core is inlined.
@functools.partial(
  jax.jit,
  static_argnames=(
    "kernel_mul",
    "kernel_num",
    "estimator",
    "bandwidth",
    "stop_bandwidth_gradient",
    "block_size",
  ),
)
def _mmd2(
  x,
  y,
  fix_sigma,
  *,
  kernel_mul,
  kernel_num,
  estimator,
  bandwidth,
  stop_bandwidth_gradient,
  block_size,
) -> jax.Array:
  kernel = _reference_kernel(
    jnp.concatenate([x, y]),
    kernel_mul=kernel_mul,
    kernel_num=kernel_num,
    fix_sigma=fix_sigma,
    bandwidth=bandwidth,
    stop_bandwidth_gradient=stop_bandwidth_gradient,
  )
  return v.nan_unless_finite(_mmd2_with_kernel(x, y, kernel, estimator, block_size), x, y)


def _explicit_kernel(distance_scales, weights, dtype) -> _kernels.Kernel:
  """DAN's kernel from ``[K]`` distance scales and weights (``None``: all 1), checked."""
  distance_scales, weights = _check_explicit_kernel(distance_scales, weights, dtype)
  return _kernels.Kernel(1.0 / distance_scales, weights)


def _check_explicit_kernel(distance_scales, weights, dtype) -> tuple[jax.Array, jax.Array]:
  """``(distance_scales, weights)`` as ``[K]`` arrays of ``dtype``, checked."""
  distance_scales = jnp.asarray(distance_scales, dtype)
  weights = jnp.ones_like(distance_scales) if weights is None else jnp.asarray(weights, dtype)
  if distance_scales.ndim != 1 or distance_scales.shape[0] == 0:
    raise ValueError(
      f"distance_scales must have shape [K] with K >= 1, got {tuple(distance_scales.shape)}."
    )
  if weights.shape != distance_scales.shape:
    raise ValueError(
      f"weights must have the shape of distance_scales {tuple(distance_scales.shape)}, "
      f"got {tuple(weights.shape)}."
    )
  v.check_positive("distance_scales", distance_scales)
  concrete = v.concrete_or_none(weights)
  if concrete is not None and np.any(concrete < 0):
    raise ValueError(f"weights must be non-negative, got {concrete}.")
  return distance_scales, weights


@v.renamed_keywords(bandwidths="distance_scales")
def mk_mmd2(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  *,
  distance_scales: jax.typing.ArrayLike,
  weights: jax.typing.ArrayLike | None = None,
  estimator: Estimator = "biased",
  block_size: int | None = None,
) -> jax.Array:
  r"""Multi-kernel squared MMD with explicit kernel scales and weights (DAN's MK-MMD).

  .. math:: k(a, b) = \sum_k w_k \exp(-\|a-b\|^2 / s_k)

  ``s_k`` divides the squared distance: a Gaussian of bandwidth ``sigma``
  (``exp(-|a - b|^2 / (2 sigma^2))``) has ``s = 2 sigma^2``, and MMDAgg's bandwidth
  ``lambda`` (:func:`~gapmmd_jax.mmd_agg`, ``exp(-|a - b|^2 / lambda^2)``) has ``s = lambda^2``
  (the docs' "Kernels and bandwidths" page). A fixed bank with unit weights is the
  kernel of Domain Separation Networks (:data:`~gapmmd_jax.DSN_DISTANCE_SCALES`, 19
  scales from 2e-6 to 2e6, none tuned to the features' scale); learned weights are DAN's.

  Reverse mode only, as :func:`mmd2` (``jax.jvp`` and ``jax.jacfwd`` raise).

  Args:
    x: ``[n, d]``.
    y: ``[m, d]``.
    distance_scales: ``[K]`` positive ``s_k``, dividing the squared distance (as
      :func:`mmd2`'s ``fix_sigma``). Called ``bandwidths`` before version 0.2 (still
      accepted, with a ``DeprecationWarning``).
    weights: ``[K]`` non-negative weights ``w_k`` (see :func:`mk_mmd_kernel_weights`);
      ``None``: all 1.
    estimator: ``"biased"``, ``"unbiased"`` or ``"linear"``.
    block_size: rows per block of the kernel sums; ``None`` chooses by size.

  Returns:
    Scalar ``jax.Array``; NaN under ``jit`` for a NaN or an infinity in ``x`` or ``y``, as
    :func:`mmd2`.

  References:
    Long et al., "Learning Transferable Features with Deep Adaptation
    Networks", ICML 2015; Bousmalis et al., "Domain Separation Networks",
    NeurIPS 2016.

  Example:
    >>> import jax
    >>> from gapmmd_jax import DSN_DISTANCE_SCALES, mk_mmd2
    >>> source = jax.random.normal(jax.random.key(0), (128, 8))
    >>> target = jax.random.normal(jax.random.key(1), (100, 8)) + 1.0
    >>> float(mk_mmd2(source, target, distance_scales=[0.5, 1.0, 2.0, 4.0],
    ...               weights=[0.1, 0.4, 0.4, 0.1]))
    0.0329
    >>> float(mk_mmd2(source, target, distance_scales=DSN_DISTANCE_SCALES))  # DSN's bank
    1.71
  """
  x, y = v.check_samples("x", x, "y", y)
  _check_estimator(estimator, x, y)
  v.check_tiling(block_size=block_size)
  distance_scales, weights = _check_explicit_kernel(distance_scales, weights, x.dtype)
  return _mk_mmd2(x, y, distance_scales, weights, estimator=estimator, block_size=block_size)


@functools.partial(jax.jit, static_argnames=("estimator", "block_size"))
def _mk_mmd2(x, y, distance_scales, weights, *, estimator, block_size) -> jax.Array:
  kernel = _kernels.Kernel(1.0 / distance_scales, weights)
  return v.nan_unless_finite(_mmd2_with_kernel(x, y, kernel, estimator, block_size), x, y)


@v.renamed_keywords(bandwidths="distance_scales")
def mk_mmd_kernel_weights(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  *,
  distance_scales: jax.typing.ArrayLike,
  regularization: float = 1e-3,
) -> jax.Array:
  r"""Learned MK-MMD kernel weights: maximise the test power (DAN's QP step).

  With ``h`` the per-pair linear-time statistics of each kernel, ``delta =
  mean(h)`` ``[K]`` and ``Q = cov(h)`` ``[K, K]``, solves

  .. math:: \min_{\beta \ge 0} \beta^T (Q + \lambda I) \beta \ \ \text{s.t.}\ \ \delta^T\beta = 1

  and returns ``beta / sum(beta)``. If no kernel has ``delta_k > 0`` (no
  detectable difference) the weights are uniform. Runs eagerly: the
  statistics in JAX, the small QP on the host with SciPy (call it every few
  hundred steps, as DAN does, not inside ``jit``).

  Args:
    x: ``[n, d]``, ``y``: ``[n, d]`` (``n >= 4``).
    distance_scales: ``[K]`` candidate ``s_k`` of :func:`mk_mmd2`'s kernels.
    regularization: ``lambda``, added to ``Q``'s diagonal, relative to its
      mean diagonal.

  Returns:
    ``[K]`` non-negative weights summing to 1.

  References:
    Gretton et al., "Optimal kernel choice for large-scale two-sample tests",
    NeurIPS 2012; Long et al., ICML 2015.

  Example:
    >>> import jax
    >>> from gapmmd_jax import mk_mmd2, mk_mmd_kernel_weights
    >>> xs = jax.random.normal(jax.random.key(0), (256, 8))
    >>> xt = jax.random.normal(jax.random.key(1), (256, 8)) + 0.5
    >>> scales = [0.25, 0.5, 1.0, 2.0, 4.0]
    >>> weights = mk_mmd_kernel_weights(xs, xt, distance_scales=scales)
    >>> float(weights.sum()), bool((weights >= 0).all())
    (1.0, True)
    >>> loss = mk_mmd2(xs, xt, distance_scales=scales, weights=weights)
  """
  x, y = v.check_samples("x", x, "y", y, min_rows=4)
  _check_estimator("linear", x, y)
  kernel = _explicit_kernel(distance_scales, jnp.ones_like(jnp.asarray(distance_scales)), x.dtype)
  single = lambda inv_bw: _kernels.Kernel(inv_bw[None], kernel.weights[:1])
  per_kernel = jax.vmap(lambda ib: _linear_terms(x, y, single(ib)), out_axes=1)(
    kernel.scaled_inv_bandwidths()
  )
  h = np.asarray(per_kernel, np.float64)  # [n // 2, K]
  delta = h.mean(axis=0)
  num_kernels = delta.shape[0]
  if not np.any(delta > 0):
    return jnp.full((num_kernels,), 1.0 / num_kernels, x.dtype)
  q = np.cov(h, rowvar=False).reshape(num_kernels, num_kernels)
  q += regularization * max(np.trace(q) / num_kernels, 1e-12) * np.eye(num_kernels)
  start = np.where(delta > 0, delta, 0.0)
  start /= start @ delta
  result = scipy.optimize.minimize(
    lambda b: b @ q @ b,
    start,
    jac=lambda b: 2.0 * q @ b,
    method="SLSQP",
    bounds=[(0.0, None)] * num_kernels,
    constraints=[{"type": "eq", "fun": lambda b: b @ delta - 1.0, "jac": lambda b: delta}],
  )
  if not result.success:
    warnings.warn(
      f"mk_mmd_kernel_weights: SLSQP did not solve the weights' QP ({result.message}); "
      "returning its starting point, the weights proportional to each kernel's positive "
      "mean statistic.",
      RuntimeWarning,
      stacklevel=2,
    )
  beta = np.clip(result.x if result.success else start, 0.0, None)
  return jnp.asarray(beta / beta.sum(), x.dtype)


TEST_METHODS = ("permutation", "wild-bootstrap")
# Above this many coefficient entries (draws x points) the draws go through the tiles in
# chunks. A chunk's temporaries are about twice its coefficients (its rows, then their
# [N, chunk] tile layout), 0.26 GiB at 32M; fewer, larger chunks form the kernel tiles fewer
# times (`docs/benchmarks.md`, "`chunk_size`: memory against time").
_DRAW_CHUNK_ENTRIES = 1 << 25
# Coefficients made at once within a chunk (see `_made_in_groups`).
_DRAW_GROUP_ENTRIES = 1 << 20


def as_typed_key(key: jax.typing.ArrayLike) -> jax.Array:
  """A typed PRNG key from a typed key or a legacy ``jax.random.PRNGKey`` (uint32 ``[2]``)."""
  key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return key
  if key.dtype != jnp.uint32 or key.ndim != 1:
    raise TypeError(
      "key must be a jax.random.key(...) or a jax.random.PRNGKey(...), got an "
      f"array of dtype {key.dtype} and shape {tuple(key.shape)}."
    )
  return jax.random.wrap_key_data(key)


def permutation_indicators(key: jax.Array, n: int, m: int, num: int) -> jax.Array:
  """``[num, n + m]`` bool rows, each marking a uniformly random ``n`` of the ``n + m`` points:
  draws ``0 .. num - 1`` of :func:`indicator_rows`."""
  return indicator_rows(key, n, m, jnp.arange(num))


def indicator_rows(key: jax.Array, n: int, m: int, rows: jax.Array) -> jax.Array:
  """``[R, n + m]`` bool: draw ``r`` of the stream of ``key`` for each entry of ``rows`` ``[R]``.

  Draw ``r`` marks the ``n`` smallest of ``n + m`` random 32-bit keys from
  ``fold_in(key, r)``, found from one sort (the ``n``-th smallest is the
  threshold; keys equal to it, about ``N / 2^32`` per row, are taken by
  position): the selection of a stable argsort at the cost of a plain sort,
  far cheaper than ``jax.random.permutation``. Each draw depends on ``r``
  alone, so draws can be made a chunk at a time and come out the same.
  """
  bits = jax.vmap(lambda r: jax.random.bits(jax.random.fold_in(key, r), (n + m,), jnp.uint32))
  return select_smallest(bits(rows), n)


def sign_rows(key: jax.Array, n: int, rows: jax.Array, dtype=jnp.float32) -> jax.Array:
  """``[R, n]`` Rademacher signs: draw ``r`` (from ``fold_in(key, r)``) for each entry of
  ``rows`` ``[R]``; as :func:`indicator_rows`, each draw depends on ``r`` alone."""
  return jax.vmap(lambda r: jax.random.rademacher(jax.random.fold_in(key, r), (n,), dtype))(rows)


def select_smallest(keys: jax.Array, n: int) -> jax.Array:
  """``[P, N]`` bool: per row, the ``n`` smallest of ``keys`` ``[P, N]``, ties by position."""
  threshold = jnp.sort(keys, axis=1)[:, n - 1 : n]
  below = keys < threshold
  tied = keys == threshold
  wanted = n - jnp.sum(below, axis=1, keepdims=True)
  return below | (tied & (jnp.cumsum(tied, axis=1) <= wanted))


def _permutation_form(n: int, m: int, estimator: str) -> tuple[float, float, float]:
  """``(alpha, beta, gamma)``: ``MMD^2 = c^T K c + gamma 1^T K 1`` with ``c = alpha a + beta 1``
  for the split whose x part has indicator ``a``.

  With ``Q = a^T K a``, ``R = a^T K 1``, ``T = 1^T K 1`` (``K`` zero on its
  diagonal, as the shifted kernel is) both estimators are ``qQ + rR + tT``;
  ``alpha^2 = q``, ``2 alpha beta = r`` leave ``gamma = t - beta^2`` (0 for
  the biased one).
  """
  if estimator == "biased":
    q, r, t = (1 / n + 1 / m) ** 2, -2 / (m * m) - 2 / (n * m), 1 / (m * m)
  else:
    q = 1 / (n * (n - 1)) + 1 / (m * (m - 1)) + 2 / (n * m)
    r, t = -2 / (m * (m - 1)) - 2 / (n * m), 1 / (m * (m - 1))
  alpha = math.sqrt(q)
  beta = r / (2 * alpha)
  return alpha, beta, t - beta * beta


def split_rows(
  key: jax.Array, n: int, m: int, num: int, estimator: str, dtype, draws: jax.Array | None = None
):
  """``(make_rows, count, gamma)`` for the permutation forms of ``num`` random splits.

  ``make_rows(index [R]) -> [R, n + m]`` coefficients ``c`` (see
  :func:`_permutation_form`): index 0 is the observed split, ``1 .. num`` the
  draws (from :func:`indicator_rows`, or rows of ``draws`` ``[num, n + m]``),
  and, when ``gamma != 0``, index ``num + 1`` a row of ones giving ``1^T K 1``;
  ``count`` is the number of rows.
  """
  alpha, beta, gamma = _permutation_form(n, m, estimator)
  observed = jnp.arange(n + m) < n

  def make_rows(index):
    previous = jnp.maximum(index - 1, 0)
    drawn = (
      indicator_rows(key, n, m, previous)
      if draws is None
      else draws[jnp.minimum(previous, num - 1)].astype(bool)
    )
    in_x = jnp.where((index == 0)[:, None], observed, drawn)
    return jnp.where((index == num + 1)[:, None], 1.0, alpha * in_x.astype(dtype) + beta)

  return make_rows, num + 1 + (gamma != 0), gamma


def signed_rows(key: jax.Array, n: int, num: int, dtype, draws: jax.Array | None = None):
  """``make_rows(index [R]) -> [R, n]`` wild-bootstrap signs: index 0 all ones (the
  observed statistic), ``1 .. num`` the draws (:func:`sign_rows`, or rows of ``draws``)."""

  def make_rows(index):
    previous = jnp.maximum(index - 1, 0)
    drawn = (
      sign_rows(key, n, previous, dtype)
      if draws is None
      else draws[jnp.minimum(previous, num - 1)].astype(dtype)
    )
    return jnp.where((index == 0)[:, None], 1.0, drawn)

  return make_rows


def _made_in_groups(make_rows, width: int):
  """``make_rows`` (``index [R] -> [R, width]``) made ``_DRAW_GROUP_ENTRIES // width`` rows at
  a time (groups of equal size; the last row repeated as padding), so that the temporaries
  of the draws (a row's random bits, their sort, the threefry state) scale with a group, not
  with the chunk. Each row depends on its index alone, so the rows are the same."""
  group = max(1, _DRAW_GROUP_ENTRIES // width)

  def made(index: jax.Array) -> jax.Array:
    count = index.shape[0]
    if count <= group:
      return make_rows(index)
    num_groups = math.ceil(count / group)
    size = math.ceil(count / num_groups)  # equal groups: padding below one row per group
    padded = jnp.concatenate([index, jnp.full((num_groups * size - count,), index[-1])])
    rows = jax.lax.map(make_rows, padded.reshape(num_groups, size))
    return rows.reshape(num_groups * size, width)[:count]

  return made


def chunked_rows(
  fn, make_rows, count: int, width: int, chunk_size: int | None, per_row_axis: int = 0
):
  """``fn(make_rows(index))`` over chunks of the row indices ``0 .. count - 1``: one walk over
  the tiles per chunk, and only one chunk's ``[chunk, width]`` coefficients in memory
  (``chunk_size=None``: up to 32M coefficients per chunk, in chunks of equal size).

  ``fn(c)`` returns an array with one entry per row on ``per_row_axis``, or a
  tuple of that and outputs that do not depend on the rows (taken from the
  first chunk). Returns the same, the per-row array for all ``count`` rows.
  """
  make_rows = _made_in_groups(make_rows, width)
  if chunk_size is None:
    chunk_size = max(1, _DRAW_CHUNK_ENTRIES // width)
  if chunk_size >= count:
    return fn(make_rows(jnp.arange(count)))
  num_chunks = math.ceil(count / chunk_size)
  chunk_size = math.ceil(count / num_chunks)  # equal chunks: padding below one row per chunk
  outputs = jax.lax.map(
    lambda start: fn(make_rows(start + jnp.arange(chunk_size))), jnp.arange(num_chunks) * chunk_size
  )
  per_row, shared = (outputs[0], outputs[1:]) if isinstance(outputs, tuple) else (outputs, None)
  per_row = jnp.moveaxis(per_row, 0, per_row_axis)  # chunks next to the rows' axis
  shape = per_row.shape
  per_row = per_row.reshape(*shape[:per_row_axis], -1, *shape[per_row_axis + 2 :])
  per_row = jax.lax.slice_in_dim(per_row, 0, count, axis=per_row_axis)
  if shared is None:
    return per_row
  return (per_row, *(leaf[0] for leaf in shared))


@v.renamed_keywords(num_permutations="num_draws")
def mmd_test(
  key: jax.Array,
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  *,
  num_draws: int = 1000,
  alpha: float = 0.05,
  estimator: Estimator = "biased",
  kernel_mul: float = 2.0,
  kernel_num: int = 5,
  fix_sigma: float | None = None,
  bandwidth: BandwidthRule = "mean",
  method: Literal["permutation", "wild-bootstrap"] = "permutation",
  chunk_size: int | None = None,
  block_size: int | None = None,
) -> TwoSampleResult:
  r"""Permutation (or wild-bootstrap) two-sample test with an MMD^2 statistic, in tiles.

  The p-value counts the observed statistic, so it is never 0:

  .. math:: p = (1 + \#\{b: \mathrm{MMD}^2_b \ge \mathrm{MMD}^2\}) / (1 + B)

  ``"permutation"`` splits the pooled sample at random ``B`` times. Every
  split's biased or unbiased statistic is a quadratic form of the pooled kernel
  matrix in its indicator vector, so one walk over the matrix's tiles serves
  the observed split and every draw, and no ``[N, N]`` matrix is ever held
  (``N = n + m``): time ``O(N^2 (d + B))``, memory ``O(N d + chunk N)``. The
  bandwidth depends only on the pooled sample, so it is shared by all draws.

  ``"wild-bootstrap"`` (``n == m``, Chwialkowski et al. 2014, as MMDAgg uses
  it) multiplies the terms ``h_ij`` of the paired statistic by random signs
  ``e_i e_j``; the observed statistic is then ``sum h_ij / n^2`` (biased, as
  :func:`mmd2`) or ``sum_{i != j} h_ij / (n (n - 1))`` (unbiased: unlike
  :func:`mmd2`'s unbiased estimate it leaves out the pairs ``k(x_i, y_i)``).
  It walks the ``[n, n]`` paired matrix, a quarter of the pooled one.

  ``"linear"`` recomputes the linear-time statistic on each permuted sample
  (``O(N d)`` each, plus one sort of ``N`` random keys).

  Given ``x`` and ``y`` with rows sharded over an explicit mesh (``jax.make_mesh``),
  both are gathered onto every device and the list of tiles is split into
  equal parts, one per device: each computes ``1 / devices`` of the work.

  Args:
    key: PRNG key (``jax.random.key`` or a legacy ``jax.random.PRNGKey``).
    x: ``[n, d]``, ``y``: ``[m, d]``.
    num_draws: ``B``, draws of the null distribution (permutations or sign vectors);
      1000 resolves p-values to 0.001, enough to decide at ``alpha`` >= 0.01.
    alpha: level of ``reject``, in (0, 1).
    estimator, kernel_mul, kernel_num, fix_sigma, bandwidth: as :func:`mmd2`. The
      default, ``"biased"``, makes ``statistic`` the number :func:`mmd2` returns; for
      ``n == m`` it gives the same p-value as ``"unbiased"`` (under every permutation or
      sign vector one statistic is an increasing affine function of the other).
    method: ``"permutation"`` or ``"wild-bootstrap"``.
    chunk_size: draws per walk over the tiles (memory ``chunk x N``); ``None``:
      all of them up to 32M coefficients.
    block_size: tile side; ``None``: 512.

  Returns:
    :class:`~gapmmd_jax.TwoSampleResult` with ``statistic``, ``p_value`` and ``reject``;
    the numbers NaN and ``reject`` False under ``jit`` when ``x`` or ``y`` holds a NaN or
    an infinity (an eager call raises ``ValueError``).

  References:
    Gretton et al., "A Kernel Two-Sample Test", JMLR 2012 (permutations);
    Chwialkowski, Sejdinovic & Gretton, "A Wild Bootstrap for Degenerate Kernel
    Tests", NeurIPS 2014.

  Example:
    >>> import jax
    >>> from gapmmd_jax import mmd_test
    >>> x = jax.random.normal(jax.random.key(0), (128, 8))
    >>> y = jax.random.normal(jax.random.key(1), (100, 8)) + 1.0
    >>> result = mmd_test(jax.random.key(2), x, y, num_draws=500)
    >>> float(result.p_value)  # no permutation reached the observed statistic: 1 / 501
    0.002
  """
  x, y = v.check_samples("x", x, "y", y)
  _check_estimator(estimator, x, y)
  v.check_int("num_draws", num_draws, 1)
  v.check_level("alpha", alpha)
  v.check_choice("method", method, TEST_METHODS)
  v.check_tiling(chunk_size=chunk_size, block_size=block_size)
  key = as_typed_key(key)
  n, m = x.shape[0], y.shape[0]
  if method == "wild-bootstrap" and (n != m or estimator == "linear"):
    raise ValueError(
      "method='wild-bootstrap' needs n == m and the biased or unbiased "
      f"estimator, got n={n}, m={m}, estimator={estimator!r}."
    )
  kernel_mul = _check_reference_kernel(kernel_mul, kernel_num, fix_sigma, bandwidth)
  statistic, p_value = _mmd_test(
    key,
    x,
    y,
    fix_sigma,
    num_permutations=num_draws,
    estimator=estimator,
    kernel_mul=kernel_mul,
    kernel_num=kernel_num,
    bandwidth=bandwidth,
    method=method,
    chunk_size=chunk_size,
    block_size=block_size,
  )
  return TwoSampleResult(statistic, p_value, p_value <= alpha)


@functools.partial(
  jax.jit,
  static_argnames=(
    "num_permutations",
    "estimator",
    "kernel_mul",
    "kernel_num",
    "bandwidth",
    "method",
    "chunk_size",
    "block_size",
  ),
)
def _mmd_test(
  key,
  x,
  y,
  fix_sigma,
  *,
  num_permutations,
  estimator,
  kernel_mul,
  kernel_num,
  bandwidth,
  method,
  chunk_size,
  block_size,
) -> tuple[jax.Array, jax.Array]:
  n, m = x.shape[0], y.shape[0]
  mesh = _kernels.explicit_mesh(x, y)  # the tiles are split over its devices
  pooled = jnp.concatenate([_kernels.replicated(x), _kernels.replicated(y)], axis=0)
  kernel = _reference_kernel(
    pooled, kernel_mul=kernel_mul, kernel_num=kernel_num, fix_sigma=fix_sigma, bandwidth=bandwidth
  )
  pooled = pooled - jnp.mean(pooled, axis=0)

  if estimator == "linear":
    observed = _mmd2_with_kernel(x, y, kernel, estimator, None)

    def one(k):
      # One sort of random 32-bit keys (ties, about N^2 / 2^33 pairs, kept in order, as in
      # indicator_rows): 0.21 s against jax.random.permutation's 0.44 s at N = 400,000,
      # d = 2 (timed on 2 CPU cores, 2026-11-28).
      z = pooled[jnp.argsort(jax.random.bits(k, (n + m,), jnp.uint32))]
      return _mmd2_with_kernel(z[:n], z[n:], kernel, estimator, None)

    null = jax.lax.map(one, jax.random.split(key, num_permutations), batch_size=chunk_size or 100)
  elif method == "permutation":
    make_rows, count, gamma = split_rows(key, n, m, num_permutations, estimator, pooled.dtype)
    forms = chunked_rows(
      lambda c: _kernels.kernel_quadratic_forms(
        pooled, c, kernel, block_size=block_size, mesh=mesh
      ),
      make_rows,
      count,
      n + m,
      chunk_size,
    )
    statistics = forms[: num_permutations + 1] + (gamma * forms[-1] if gamma else 0.0)
    observed, null = statistics[0], statistics[1:]
  else:  # sum_{i != j} e_i e_j h_ij on the [n, n] paired matrix, per draw of signs e
    x, y = pooled[:n], pooled[n:]
    off_diagonal = chunked_rows(
      lambda e: _kernels.kernel_paired_forms(x, y, e, kernel, block_size=block_size, mesh=mesh),
      signed_rows(key, n, num_permutations, pooled.dtype),
      num_permutations + 1,
      n,
      chunk_size,
    )
    if estimator == "unbiased":  # MMDAgg's: the pairs i == j left out
      statistics = off_diagonal / (n * (n - 1.0))
    else:  # e_i^2 = 1: add h_ii = -2 (k(x_i, y_i) - peak)
      diff = x - y
      h_diagonal = -2.0 * jnp.sum(_kernels.gaussian_kernel(jnp.sum(diff * diff, axis=1), kernel))
      statistics = (off_diagonal + h_diagonal) / (n * n)
    observed, null = statistics[0], statistics[1:]
  exceed = jnp.sum(null >= observed)
  return v.nan_unless_finite((observed, (1.0 + exceed) / (1.0 + num_permutations)), x, y)


def class_mmd_matrix(
  features: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  num_classes: int,
  samples_per_class: int | None = None,
  estimator: Estimator = "biased",
  kernel_mul: float = 2.0,
  kernel_num: int = 5,
  fix_sigma: float | None = None,
  bandwidth: BandwidthRule = "mean",
  block_size: int | None = None,
) -> jax.Array:
  r"""``[C, C]`` matrix of MMD^2 between the feature sets of pairs of classes.

  Each class's samples (in the given order) are split into two disjoint halves
  ``A_c`` and ``B_c`` of one common size ``h`` (half the smallest class, or
  ``samples_per_class // 2``), and

  .. math:: M_{ij} = \mathrm{MMD}^2(A_i, B_j)

  so the diagonal compares a class with a disjoint sample of itself and every
  entry uses the same sample sizes (the biased estimator's bias depends on
  them). ``labels`` must be concrete (not traced): class sizes set shapes.

  Reverse mode only, as :func:`mmd2` (``jax.jvp`` and ``jax.jacfwd`` raise).

  Args:
    features: ``[N, d]``.
    labels: ``[N]`` integers in ``[0, num_classes)``.
    num_classes: ``C``.
    samples_per_class: use at most this many samples per class.
    estimator, kernel_mul, kernel_num, fix_sigma, bandwidth, block_size: as
      :func:`mmd2` (the bandwidth is chosen per pair unless ``fix_sigma``).

  Returns:
    ``[C, C]`` array.

  Example:
    >>> import jax
    >>> from gapmmd_jax import class_mmd_matrix
    >>> labels = jax.numpy.arange(90) % 3
    >>> features = jax.random.normal(jax.random.key(0), (90, 8)) + labels[:, None]
    >>> matrix = class_mmd_matrix(features, labels, num_classes=3)
    >>> matrix.shape, bool(matrix[0, 0] < matrix[0, 2])
    ((3, 3), True)
  """
  pair = lambda a, b: mmd2(
    a,
    b,
    kernel_mul=kernel_mul,
    kernel_num=kernel_num,
    fix_sigma=fix_sigma,
    estimator=estimator,
    bandwidth=bandwidth,
    block_size=block_size,
  )
  return class_pair_matrix(
    pair, features, labels, num_classes=num_classes, samples_per_class=samples_per_class
  )


def class_gap_loss(
  features: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  num_classes: int,
  kernel_mul: float = 2.0,
  kernel_num: int = 5,
) -> jax.Array:
  r"""Batch-level class-gap regulariser: within-class minus between-class MMD^2.

  The batch is cut into a first and a second half; with ``A_c`` and ``B_c``
  the class-``c`` samples of each half and ``D_ij`` the biased MMD^2 of
  :func:`mmd2` between ``A_i`` and ``B_j`` (one kernel matrix, class sets as
  weight vectors, so ``labels`` may be traced),

  .. math:: \mathcal{L} = \mathrm{mean}_{i} D_{ii} - \mathrm{mean}_{i \ne j} D_{ij}

  over the classes present. Minimising it pulls each class together and pushes
  classes apart.

  Args:
    features: ``[B, d]`` (``B >= 4``).
    labels: ``[B]`` integer labels.
    num_classes: ``C``.
    kernel_mul, kernel_num: as :func:`mmd2` (mean bandwidth of the batch).

  Returns:
    Scalar.

  Example:
    Five classes of 16-dimensional features; the loss is negative when the classes
    are farther apart than their members (it can go under a training loss's ``grad``):

    >>> import jax
    >>> from gapmmd_jax import class_gap_loss
    >>> labels = jax.numpy.arange(60) % 5
    >>> features = jax.random.normal(jax.random.key(0), (60, 16)) + 3.0 * labels[:, None]
    >>> float(class_gap_loss(features, labels, num_classes=5)) < 0
    True
  """
  features = v.as_float_array("features", features)
  v.check_rank("features", features, 2, "[B, d]")
  if features.shape[0] < 4:
    raise ValueError(f"features needs at least 4 rows, got shape {tuple(features.shape)}.")
  labels = jnp.asarray(labels)
  if labels.shape != (features.shape[0],):
    raise ValueError(f"labels must have shape [B]={features.shape[0]}, got {tuple(labels.shape)}.")
  kernel_mul = _check_reference_kernel(kernel_mul, kernel_num, None, "mean")
  kernel = _reference_kernel(
    features, kernel_mul=kernel_mul, kernel_num=kernel_num, fix_sigma=None, bandwidth="mean"
  )
  half = features.shape[0] // 2
  centred = features - jnp.mean(features, axis=0)
  first, second = centred[:half], centred[half : 2 * half]

  def class_weights(lbl):
    onehot = jax.nn.one_hot(lbl, num_classes, dtype=features.dtype)  # [h, C]
    counts = jnp.sum(onehot, axis=0)
    return onehot / jnp.maximum(counts, 1.0), counts > 0

  w1, present1 = class_weights(labels[:half])
  w2, present2 = class_weights(labels[half : 2 * half])
  m11 = w1.T @ _kernels.self_kernel_matrix(first, kernel) @ w1
  m22 = w2.T @ _kernels.self_kernel_matrix(second, kernel) @ w2
  m12 = w1.T @ _kernels.kernel_matrix(first, second, kernel) @ w2
  gaps = jnp.diagonal(m11)[:, None] + jnp.diagonal(m22)[None, :] - 2.0 * m12  # [C, C]
  valid = present1[:, None] & present2[None, :]
  eye = jnp.eye(num_classes, dtype=bool)
  mean_over = lambda mask: jnp.sum(jnp.where(mask, gaps, 0.0)) / jnp.maximum(jnp.sum(mask), 1)
  return mean_over(valid & eye) - mean_over(valid & ~eye)

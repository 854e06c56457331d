"""The result type shared by the two-sample tests."""

from __future__ import annotations

import dataclasses
import warnings

import jax


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TwoSampleResult:
  """The outcome of :func:`~gapmmd_jax.mmd_test`, :func:`~gapmmd_jax.mmd_fuse` and
  :func:`~gapmmd_jax.mmd_agg`: scalars, and for MMDAgg its per-kernel arrays ``[K]``.

  A pytree, so it passes through ``jit`` and ``vmap``.

  Attributes:
    statistic: the test statistic (float scalar): the MMD^2 estimate (``mmd_test``), the
      soft maximum of normalised estimates (``mmd_fuse``), or the largest margin of a
      kernel's estimate over its corrected quantile, ``max_k (statistics - quantiles)``
      (``mmd_agg``: positive when some kernel exceeds its threshold).
    p_value: float scalar in [0, 1]: ``(1 + #{null draws >= statistic}) / (1 + B)``
      (``mmd_test``, ``mmd_fuse``), or the smallest level at which MMDAgg's aggregated
      test rejects (``mmd_agg``).
    reject: bool scalar, ``p_value <= alpha``.
    p_values, thresholds, statistics, quantiles, bandwidths: ``mmd_agg`` only (else
      ``None``): per-kernel p-values, their thresholds ``u* w_k`` (a kernel rejects where
      ``p_values <= thresholds``), unbiased MMD^2 estimates, corrected ``(1 - u* w_k)``
      quantiles of the null draws, and bandwidths ``lambda`` (``exp(-|a - b|_2^2 /
      lambda^2)``, Gaussian; ``exp(-|a - b|_1 / lambda)``, Laplace); in the order of its
      ``kernels``, ``num_bandwidths`` each, smallest bandwidth first.

  Example:
    >>> import jax
    >>> from gapmmd_jax import mmd_test
    >>> x = jax.random.normal(jax.random.key(0), (64, 3))
    >>> result = mmd_test(jax.random.key(1), x, x + 1.0, num_draws=99)
    >>> float(result.p_value), bool(result.reject)
    (0.01, True)
  """

  statistic: jax.Array
  p_value: jax.Array
  reject: jax.Array
  p_values: jax.Array | None = None
  thresholds: jax.Array | None = None
  statistics: jax.Array | None = None
  quantiles: jax.Array | None = None
  bandwidths: jax.Array | None = None

  def _legacy_pair(self) -> tuple[jax.Array, jax.Array]:
    warnings.warn(
      "the two-sample tests return a TwoSampleResult: use result.statistic and "
      "result.p_value instead of unpacking or indexing (statistic, p_value).",
      DeprecationWarning,
      stacklevel=3,
    )
    return self.statistic, self.p_value

  def __iter__(self):
    """Deprecated: ``statistic, p_value = result``, the tuple that the tests returned."""
    return iter(self._legacy_pair())

  def __getitem__(self, index):
    """Deprecated: ``result[0]``, ``result[1]``, as of the tuple that the tests returned."""
    return self._legacy_pair()[index]

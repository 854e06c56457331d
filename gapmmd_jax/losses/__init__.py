"""Losses and distances between feature distributions, as pure JAX functions."""

from gapmmd_jax.losses._class_matrix import (
  class_halves,
  class_pair_matrix,
  diagonal_separability,
)
from gapmmd_jax.losses._distances import (
  cosine_distance,
  euclidean_distance,
  grassmann_distance,
  mahalanobis_distance,
  standardized_euclidean_distance,
)
from gapmmd_jax.losses._mmd import (
  DSN_DISTANCE_SCALES,
  class_gap_loss,
  class_mmd_matrix,
  mk_mmd2,
  mk_mmd_kernel_weights,
  mmd2,
  mmd_test,
)
from gapmmd_jax.losses._mutual_info import (
  gaussian_mutual_information,
  histogram_mutual_information,
  iic_loss,
  mine_bias_corrected_loss,
  mine_lower_bound,
)
from gapmmd_jax.losses._test_result import TwoSampleResult
from gapmmd_jax.losses._two_sample import mmd_agg, mmd_fuse
from gapmmd_jax.losses._vat import vat_loss, virtual_adversarial_perturbation

__all__ = [
  "DSN_DISTANCE_SCALES",
  "TwoSampleResult",
  "class_gap_loss",
  "class_halves",
  "class_mmd_matrix",
  "class_pair_matrix",
  "cosine_distance",
  "diagonal_separability",
  "euclidean_distance",
  "gaussian_mutual_information",
  "grassmann_distance",
  "histogram_mutual_information",
  "iic_loss",
  "mahalanobis_distance",
  "mine_bias_corrected_loss",
  "mine_lower_bound",
  "mk_mmd2",
  "mk_mmd_kernel_weights",
  "mmd2",
  "mmd_agg",
  "mmd_fuse",
  "mmd_test",
  "standardized_euclidean_distance",
  "vat_loss",
  "virtual_adversarial_perturbation",
]


# Names renamed in version 0.2, kept for one release.
_DEPRECATED = {"DSN_BANDWIDTHS": "DSN_DISTANCE_SCALES", "MMDAggResult": "TwoSampleResult"}


def deprecated_name(name: str, module: str, stacklevel: int = 3):
  """The object a name renamed in version 0.2 now has, with a ``DeprecationWarning``."""
  import warnings

  new = _DEPRECATED[name]
  warnings.warn(
    f"{module}.{name} is deprecated: use {module}.{new}.", DeprecationWarning, stacklevel=stacklevel
  )
  return globals()[new]


def __getattr__(name: str):
  if name in _DEPRECATED:
    return deprecated_name(name, __name__)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

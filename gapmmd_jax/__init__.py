"""gapmmd_jax: measure and shape the gap between feature distributions in JAX."""

from gapmmd_jax.losses import (
  DSN_DISTANCE_SCALES,
  TwoSampleResult,
  class_gap_loss,
  class_mmd_matrix,
  class_pair_matrix,
  cosine_distance,
  diagonal_separability,
  euclidean_distance,
  gaussian_mutual_information,
  grassmann_distance,
  histogram_mutual_information,
  iic_loss,
  mahalanobis_distance,
  mine_bias_corrected_loss,
  mine_lower_bound,
  mk_mmd2,
  mk_mmd_kernel_weights,
  mmd2,
  mmd_agg,
  mmd_fuse,
  mmd_test,
  standardized_euclidean_distance,
  vat_loss,
  virtual_adversarial_perturbation,
)
from gapmmd_jax.metrics import cluster_accuracy, matched_accuracy, matched_table
from gapmmd_jax.ops import gradient_reversal

__version__ = "0.2.0"

__all__ = [
  "DSN_DISTANCE_SCALES",
  "TwoSampleResult",
  "class_gap_loss",
  "class_mmd_matrix",
  "class_pair_matrix",
  "cluster_accuracy",
  "cosine_distance",
  "diagonal_separability",
  "euclidean_distance",
  "gaussian_mutual_information",
  "gradient_reversal",
  "grassmann_distance",
  "histogram_mutual_information",
  "iic_loss",
  "mahalanobis_distance",
  "matched_accuracy",
  "matched_table",
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


def __getattr__(name: str):
  """The names renamed in version 0.2 (``DSN_BANDWIDTHS``, ``MMDAggResult``), with a warning."""
  from gapmmd_jax import losses

  if name in losses._DEPRECATED:  # the warning points at the caller's line
    return losses.deprecated_name(name, __name__)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""gapmmd_jax: measure and shape the gap between feature distributions in JAX."""

from gapmmd_jax.losses import (
    DSN_BANDWIDTHS,
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
    mmd_fuse,
    mmd_test,
    standardized_euclidean_distance,
    vat_loss,
    virtual_adversarial_perturbation,
)
from gapmmd_jax.metrics import cluster_accuracy, matched_accuracy
from gapmmd_jax.ops import gradient_reversal

__version__ = "0.1.0"

__all__ = [
    "DSN_BANDWIDTHS",
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
    "mine_bias_corrected_loss",
    "mine_lower_bound",
    "mk_mmd2",
    "mk_mmd_kernel_weights",
    "mmd2",
    "mmd_fuse",
    "mmd_test",
    "standardized_euclidean_distance",
    "vat_loss",
    "virtual_adversarial_perturbation",
]

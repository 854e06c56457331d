"""Class-by-class comparison of feature sets."""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from gapmmd_jax import _validation as v


def class_halves(
  features: jax.typing.ArrayLike, labels, *, num_classes: int, samples_per_class: int | None = None
) -> tuple[jax.Array, jax.Array]:
  """Two disjoint, equally sized halves of every class's samples.

  Each class's samples, in the given order, are cut into a first and a second
  half of one common size ``h``: half the smallest class, or
  ``samples_per_class // 2`` if smaller. ``labels`` must be concrete (class
  sizes set the output shape).

  Args:
    features: ``[N, d]``.
    labels: ``[N]`` integers in ``[0, num_classes)``.
    num_classes: ``C``.
    samples_per_class: use at most this many samples of each class.

  Returns:
    ``(first, second)``, each ``[C, h, d]``.
  """
  features = v.as_float_array("features", features)
  v.check_rank("features", features, 2, "[N, d]")
  v.check_int("num_classes", num_classes, 1)
  labels_np = v.concrete_or_none(labels)
  if labels_np is None:
    raise TypeError("labels must be concrete (a NumPy or committed JAX array), not traced.")
  if labels_np.shape != (features.shape[0],):
    raise ValueError(f"labels must have shape [N]={features.shape[0]}, got {labels_np.shape}.")
  if labels_np.size and (labels_np.min() < 0 or labels_np.max() >= num_classes):
    raise ValueError(
      f"labels must lie in [0, {num_classes}), got range [{labels_np.min()}, {labels_np.max()}]."
    )
  members = [np.flatnonzero(labels_np == c) for c in range(num_classes)]
  half = min(len(idx) for idx in members) // 2
  if samples_per_class is not None:
    half = min(half, samples_per_class // 2)
  if half < 1:
    counts = [len(idx) for idx in members]
    raise ValueError(
      f"every class needs at least 2 samples (two disjoint halves), got "
      f"per-class counts {counts} and samples_per_class={samples_per_class}."
    )
  first = features[np.stack([idx[:half] for idx in members])]
  second = features[np.stack([idx[half : 2 * half] for idx in members])]
  return first, second


def class_pair_matrix(
  distance_fn: Callable[[jax.Array, jax.Array], jax.Array],
  features: jax.typing.ArrayLike,
  labels,
  *,
  num_classes: int,
  samples_per_class: int | None = None,
) -> jax.Array:
  r"""``[C, C]`` matrix of a set distance between the classes' feature sets.

  .. math:: M_{ij} = \mathrm{dist}(A_i, B_j)

  with ``A_c, B_c`` the disjoint halves of class ``c`` (:func:`~gapmmd_jax.losses.class_halves`),
  so the diagonal compares a class with a disjoint sample of itself and every
  entry uses the same sample sizes.

  Args:
    distance_fn: ``(x [h, d], y [h, d]) -> scalar``, e.g. :func:`mmd2`.
    features, labels, num_classes, samples_per_class: as :func:`~gapmmd_jax.losses.class_halves`.

  Returns:
    ``[C, C]`` array.

  Example:
    Any set distance, here the distance between class means:

    >>> import jax
    >>> from gapmmd_jax import class_pair_matrix, euclidean_distance
    >>> labels = jax.numpy.arange(40) % 2
    >>> features = jax.random.normal(jax.random.key(0), (40, 4)) + 2.0 * labels[:, None]
    >>> class_pair_matrix(euclidean_distance, features, labels, num_classes=2).round(1)
    Array([[0.4, 3.5],
           [3.9, 0.8]], dtype=float32)
  """
  first, second = class_halves(
    features, labels, num_classes=num_classes, samples_per_class=samples_per_class
  )
  return jax.vmap(lambda a: jax.vmap(lambda b: distance_fn(a, b))(second))(first)


def diagonal_separability(matrix, *, higher_is_closer: bool = False) -> dict[str, float]:
  """How well a class matrix separates classes: one row per class.

  Returns:
    ``rows_diagonal_best``: fraction of rows whose diagonal is the row's
    closest entry (minimum, or maximum for similarities), and
    ``offdiag_to_diag``: mean off-diagonal over mean diagonal (for
    similarities, mean diagonal over mean off-diagonal), so that larger is
    better for both.

  Example:
    >>> import numpy as np
    >>> from gapmmd_jax import diagonal_separability
    >>> scores = diagonal_separability(np.array([[0.1, 2.0], [1.5, 0.2]]))
    >>> scores["rows_diagonal_best"]  # every row's smallest entry is on the diagonal
    1.0
  """
  m = np.asarray(matrix, np.float64)
  c = m.shape[0]
  if m.shape != (c, c) or c < 2:
    raise ValueError(f"matrix must be square [C, C] with C >= 2, got {m.shape}.")
  off = ~np.eye(c, dtype=bool)
  sign = -1.0 if higher_is_closer else 1.0
  rows_ok = [sign * m[i, i] < np.min(sign * m[i, off[i]]) for i in range(c)]
  diag, offdiag = np.mean(np.diag(m)), np.mean(m[off])
  ratio = diag / offdiag if higher_is_closer else offdiag / diag
  return {
    "rows_diagonal_best": float(np.mean(rows_ok)),
    "offdiag_to_diag": float(ratio) if np.isfinite(ratio) else float("inf"),
  }

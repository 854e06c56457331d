"""Evaluation metrics computed on the host."""

from __future__ import annotations

import numpy as np
import scipy.optimize


def cluster_accuracy(y_true, y_pred) -> float:
  """Accuracy after the best one-to-one matching of clusters to labels.

  Builds the contingency table and matches with the Hungarian algorithm
  (``scipy.optimize.linear_sum_assignment``). With more clusters than labels
  (over-clustering) the unmatched clusters count as errors.

  Args:
    y_true: ``[N]`` non-negative integer labels.
    y_pred: ``[N]`` non-negative integer cluster ids.

  Returns:
    Accuracy in ``[0, 1]`` as a Python float.

  Example:
    >>> cluster_accuracy(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0]))
    1.0
  """
  y_true = np.asarray(y_true)
  y_pred = np.asarray(y_pred)
  for name, arr in (("y_true", y_true), ("y_pred", y_pred)):
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
      raise ValueError(
        f"{name} must be a 1-D integer array, got shape {arr.shape}, dtype {arr.dtype}."
      )
    if arr.size and arr.min() < 0:
      raise ValueError(f"{name} must be non-negative, got minimum {arr.min()}.")
  if y_true.shape != y_pred.shape or y_true.size == 0:
    raise ValueError(
      f"y_true and y_pred must have the same non-empty shape, got "
      f"{y_true.shape} and {y_pred.shape}."
    )
  counts = np.zeros((y_pred.max() + 1, y_true.max() + 1), np.int64)
  np.add.at(counts, (y_pred, y_true), 1)
  return matched_accuracy(counts)


def matched_accuracy(counts) -> float:
  """Accuracy of the best one-to-one cluster-to-label matching of a contingency table.

  Args:
    counts: ``[clusters, labels]`` non-negative counts (or fractions) of
      examples per (cluster, label).

  Returns:
    Matched fraction of all examples, in ``[0, 1]``.

  Example:
    >>> import numpy as np
    >>> from gapmmd_jax import matched_accuracy
    >>> counts = np.array([[0, 9], [8, 1]])  # clusters x labels
    >>> round(matched_accuracy(counts), 3)  # cluster 0 is label 1, cluster 1 label 0: 17 / 18
    0.944
  """
  counts = _checked_counts(counts)
  rows, cols = scipy.optimize.linear_sum_assignment(counts, maximize=True)
  return float(counts[rows, cols].sum() / counts.sum())


def matched_table(counts) -> np.ndarray:
  """A contingency table with its clusters reordered by the best matching.

  Row ``j < labels`` is the cluster matched to label ``j``, so the diagonal
  holds the matched examples and an off-diagonal entry is a cluster holding
  another label's examples (two labels merged, or one split). Clusters left
  unmatched (more clusters than labels) follow, in their original order.

  Args:
    counts: ``[clusters, labels]`` non-negative counts, ``clusters >= labels``.

  Returns:
    ``[clusters, labels]`` float64, the rows of ``counts`` reordered.

  Example:
    >>> matched_table(np.array([[0, 5], [4, 1]])).tolist()
    [[4.0, 1.0], [0.0, 5.0]]
  """
  counts = _checked_counts(counts)
  clusters, labels = counts.shape
  if clusters < labels:
    raise ValueError(f"need at least as many clusters as labels, got {clusters} < {labels}.")
  rows, cols = scipy.optimize.linear_sum_assignment(counts, maximize=True)
  matched = rows[np.argsort(cols)]  # the cluster matched to each label, in label order
  unmatched = np.setdiff1d(np.arange(clusters), matched)
  return counts[np.concatenate([matched, unmatched])]


def _checked_counts(counts) -> np.ndarray:
  counts = np.asarray(counts, np.float64)
  if counts.ndim != 2 or counts.size == 0 or counts.min() < 0 or counts.sum() <= 0:
    raise ValueError(
      "counts must be a non-empty [clusters, labels] table of non-negative "
      f"values with a positive total, got shape {counts.shape}."
    )
  return counts

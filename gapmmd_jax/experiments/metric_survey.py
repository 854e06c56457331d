"""Experiment 2: a survey of distances between feature distributions.

First the classic demo: MMD^2 between two sets of 10 x 500 values drawn from
the same distribution, and from two different ones. Then, on the GAP features
of a trained GAP-LeNet (trained here, or read from ``--gap-run DIR``), every
distance of the library as a 10 x 10 class matrix with separability scores,
ranked, and a t-SNE of the features (with scikit-learn installed). ::

  gapmmd metric-survey                          # trains GAP-LeNet (default variant) first
  gapmmd metric-survey --gap-run runs/gap-mmd-full-s0-1-2-...   # reuse a run's features
  gapmmd metric-survey --variant quick          # smoke run
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gapmmd_jax import losses, plotting
from gapmmd_jax.config import option
from gapmmd_jax.experiments import gap_mmd
from gapmmd_jax.train import RunDir

NAME = "metric-survey"
# The typical result quoted for this demo with the biased 5-kernel mmd_rbf.
REFERENCE_DEMO = {"same": 0.7, "different": 7.4}

FILES = {
  "survey.json": "the demo values and, per distance, the class matrix and its scores",
  "survey.md": "the ranked table of distances (also printed)",
  "distances.png": "every distance as a 10 x 10 class matrix (first half of class i vs "
  "second half of class j)",
  "tsne.png": "t-SNE of the GAP features coloured by class (needs scikit-learn)",
}


@dataclasses.dataclass(frozen=True)
class Config(gap_mmd.Config):
  """GAP-LeNet options (used when training here) plus the survey's own."""

  gap_run: str | None = option(
    None, "gap-mmd run directory whose gap_features.npy to survey (default: train GAP-LeNet first)"
  )
  demo_seed: int = option(0, "seed of the random-distribution demo")
  grassmann_rank: int = option(5, "subspace dimension of the Grassmann distance")
  histogram_bins: int = option(8, "bins per axis of the histogram mutual information")
  tsne_points_per_class: int = option(150, "points per class in the t-SNE plot")


VARIANTS = {name: Config(**dataclasses.asdict(cfg)) for name, cfg in gap_mmd.VARIANTS.items()}
DEFAULT_VARIANT = gap_mmd.DEFAULT_VARIANT


def random_distribution_demo(seed: int) -> dict[str, float]:
  """MMD^2 of 10 x 500 log-normal(-0.6, 0.15) values vs the same, and vs Beta(1, 10)."""
  rng = np.random.default_rng(seed)
  lognormal = lambda: rng.lognormal(-0.6, 0.15, size=(10, 500)).astype(np.float32)
  same_a, same_b = lognormal(), lognormal()
  different = rng.beta(1.0, 10.0, size=(10, 500)).astype(np.float32)
  return {
    "same": float(losses.mmd2(same_a, same_b)),
    "different": float(losses.mmd2(same_a, different)),
  }


def _histogram_mi_of_means(x, y, *, bins):
  return losses.histogram_mutual_information(jnp.mean(x, 0), jnp.mean(y, 0), bins=bins)


def distances(cfg: Config) -> dict[str, tuple[Callable[[jax.Array, jax.Array], jax.Array], bool]]:
  """Name -> (set distance ``(x, y) -> scalar``, higher_is_closer)."""
  return {
    "MMD^2 (biased, 5 kernels)": (losses.mmd2, False),
    "MMD^2 (unbiased)": (functools.partial(losses.mmd2, estimator="unbiased"), False),
    "Euclidean (means)": (losses.euclidean_distance, False),
    "standardised Euclidean": (losses.standardized_euclidean_distance, False),
    "Mahalanobis (pooled, shrunk)": (losses.mahalanobis_distance, False),
    "cosine distance (means)": (losses.cosine_distance, False),
    f"Grassmann (rank {cfg.grassmann_rank})": (
      functools.partial(losses.grassmann_distance, rank=cfg.grassmann_rank),
      False,
    ),
    f"histogram MI of means ({cfg.histogram_bins} bins)": (
      functools.partial(_histogram_mi_of_means, bins=cfg.histogram_bins),
      True,
    ),
  }


def survey(features: np.ndarray, cfg: Config) -> list[dict]:
  """Class matrices and scores of every distance, best separating first.

  Args:
    features: ``[C, N, d]`` features per class.
  """
  num_classes, per_class, dim = features.shape
  flat, labels = features.reshape(-1, dim), np.repeat(np.arange(num_classes), per_class)
  rows = []
  for name, (fn, higher_is_closer) in distances(cfg).items():
    matrix = np.asarray(losses.class_pair_matrix(fn, flat, labels, num_classes=num_classes))
    rows.append(
      {
        "distance": name,
        "higher_is_closer": higher_is_closer,
        "matrix": matrix,
        **losses.diagonal_separability(matrix, higher_is_closer=higher_is_closer),
      }
    )
  return sorted(rows, key=lambda r: (-r["rows_diagonal_best"], -r["offdiag_to_diag"]))


def _tsne(features: np.ndarray, cfg: Config, path: pathlib.Path) -> str:
  subset = features[:, : cfg.tsne_points_per_class]
  labels = np.repeat(np.arange(len(features)), subset.shape[1])
  points = plotting.tsne_2d(subset.reshape(len(labels), -1), seed=cfg.demo_seed)
  if points is None:
    return "skipped: scikit-learn is not installed (pip install 'gapmmd-jax[plot]')"
  plotting.scatter_by_class(points, labels, path, title="t-SNE of GAP features")
  return "written"


def _table(rows: list[dict]) -> str:
  lines = [
    "| rank | distance | rows with diagonal closest | off-diag / diag |",
    "| --- | --- | --- | --- |",
  ]
  for rank, r in enumerate(rows, 1):
    lines.append(
      f"| {rank} | {r['distance']} | {100 * r['rows_diagonal_best']:.0f}% | "
      f"{r['offdiag_to_diag']:.2f} |"
    )
  return "\n".join(lines)


def run(cfg: Config, variant: str = "custom") -> dict:
  """Runs the demo and the survey; returns what ``survey.json`` holds."""
  demo = random_distribution_demo(cfg.demo_seed)
  if cfg.gap_run is None:
    gap_dir = gap_mmd.run(cfg, variant).run_dir.path
  else:
    gap_dir = pathlib.Path(cfg.gap_run)
  features_path = gap_dir / "gap_features.npy"
  if not features_path.is_file():
    raise FileNotFoundError(
      f"{features_path} not found: --gap-run must be a gap-mmd run directory."
    )
  features = np.load(features_path)[0]  # first seed
  rows = survey(features, cfg)
  out = RunDir(gap_dir / "survey", FILES)
  tsne = _tsne(features, cfg, out.file("tsne.png"))
  plotting.heatmaps(
    [r["matrix"] for r in rows],
    [r["distance"] for r in rows],
    out.file("distances.png"),
    fmt="{:.2g}",
  )
  result = {
    "gap_run": str(gap_dir),
    "demo": demo,
    "reference_demo": REFERENCE_DEMO,
    "tsne": tsne,
    "ranking": rows,
  }
  out.write_json("survey.json", result)
  table = _table(rows)
  out.file("survey.md").write_text(table + "\n")
  out.write_readme(f"{NAME} on {gap_dir}")
  print(
    f"\n{NAME}: MMD^2 of 10 x 500 values, same distribution {demo['same']:.3f} "
    f"(reference ~{REFERENCE_DEMO['same']}), different {demo['different']:.3f} "
    f"(reference ~{REFERENCE_DEMO['different']})"
  )
  print(f"distances between the classes' GAP features ({gap_dir}):")
  print(table)
  print(f"survey directory: {out.path}")
  return result

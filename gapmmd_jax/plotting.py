"""PNG figures of the experiments (needs the ``plot`` extra: matplotlib)."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt


def _pyplot():
  """matplotlib.pyplot on the Agg backend, or None when matplotlib is missing."""
  try:
    import matplotlib
  except ImportError:
    return None
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def _grid(plt, count: int, columns: int, cell: tuple[float, float]):
  """A figure with ``count`` panels in rows of ``columns``; the axes flattened."""
  columns = min(columns, count)
  rows = -(-count // columns)
  fig, axes = plt.subplots(
    rows, columns, figsize=(cell[0] * columns, cell[1] * rows), squeeze=False
  )
  return fig, list(axes.flat)


def heatmaps(
  matrices: Sequence[np.ndarray],
  titles: Sequence[str],
  path: pathlib.Path,
  *,
  fmt: str = "{:.2f}",
  log_scale: Sequence[bool] | None = None,
  labels: Sequence[str] | None = None,
  columns: int = 4,
) -> bool:
  """Annotated heatmaps side by side (rows = first index). False without matplotlib."""
  plt = _pyplot()
  if plt is None:
    return False
  from matplotlib.colors import LogNorm

  count = len(matrices)
  fig, axes = _grid(plt, count, columns, (5.2, 4.6))
  for k, ax in enumerate(axes):
    if k >= count:
      ax.axis("off")
      continue
    m = np.asarray(matrices[k], np.float64)
    norm = None
    if log_scale is not None and log_scale[k]:
      norm = LogNorm(vmin=max(np.min(m[m > 0]), 1e-12), vmax=max(np.max(m), 1e-12))
    image = ax.imshow(m, cmap="viridis", norm=norm)
    fig.colorbar(image, ax=ax, fraction=0.046)
    if m.shape[0] <= 12:
      for (i, j), value in np.ndenumerate(m):
        ax.text(
          j,
          i,
          fmt.format(value),
          ha="center",
          va="center",
          fontsize=6.5,
          color="white" if value < np.median(m) else "black",
        )
    ticks = labels if labels is not None else [str(i) for i in range(m.shape[0])]
    ax.set_xticks(range(m.shape[1]), ticks[: m.shape[1]])
    ax.set_yticks(range(m.shape[0]), ticks[: m.shape[0]])
    ax.set_title(titles[k], fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def image_grid(
  images: np.ndarray,
  overlays: np.ndarray | None,
  titles: Sequence[str],
  path: pathlib.Path,
  *,
  columns: int = 8,
) -> bool:
  """Images ``[K, H, W]`` or ``[K, H, W, 3]`` in a grid, optionally with heat overlays ``[K, H, W]``."""
  plt = _pyplot()
  if plt is None:
    return False
  count = len(images)
  fig, axes = _grid(plt, count, columns, (1.9, 2.1))
  for k, ax in enumerate(axes):
    ax.axis("off")
    if k >= count:
      continue
    ax.imshow(images[k], cmap="gray" if images[k].ndim == 2 else None)
    if overlays is not None:
      ax.imshow(overlays[k], cmap="jet", alpha=0.45)
    ax.set_title(titles[k], fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def lines_with_bands(
  x: npt.ArrayLike,
  series: dict[str, tuple[np.ndarray, np.ndarray | None]],
  path: pathlib.Path,
  **options: Any,
) -> bool:
  """:func:`curves` with one ``x`` shared by every named series ``(mean, std or None)``."""
  return curves({name: (x, mean, std) for name, (mean, std) in series.items()}, path, **options)


def curves(
  series: Mapping[str, tuple[npt.ArrayLike, np.ndarray, np.ndarray | None]],
  path: pathlib.Path,
  *,
  xlabel: str,
  ylabel: str,
  title: str,
  log_x: bool = False,
  reference: tuple[npt.ArrayLike, npt.ArrayLike, str] | None = None,
) -> bool:
  """Mean lines with +-std bands, one per named series ``(x, mean, std or None)``, each
  over its own ``x``; ``reference=(x, y, label)`` adds a dashed black line."""
  plt = _pyplot()
  if plt is None:
    return False
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, (x, mean, std) in series.items():
    x = np.asarray(x)
    ax.plot(x, mean, marker="o" if len(x) <= 50 else None, label=name)
    if std is not None:
      ax.fill_between(x, np.asarray(mean) - std, np.asarray(mean) + std, alpha=0.25)
  if reference is not None:
    ax.plot(reference[0], reference[1], "k--", label=reference[2])
  if log_x:
    ax.set_xscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def scatter_by_class(
  points: np.ndarray, labels: np.ndarray, path: pathlib.Path, *, title: str
) -> bool:
  """2-D points coloured by integer class."""
  plt = _pyplot()
  if plt is None:
    return False
  fig, ax = plt.subplots(figsize=(6, 6))
  for c in np.unique(labels):
    pts = points[labels == c]
    ax.scatter(pts[:, 0], pts[:, 1], s=4, label=str(c))
  ax.legend(markerscale=3, fontsize=8)
  ax.set_title(title, fontsize=10)
  ax.set_xticks([])
  ax.set_yticks([])
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def tsne_2d(points: np.ndarray, seed: int = 0) -> np.ndarray | None:
  """t-SNE (scikit-learn, PCA initialisation) of ``[N, d]`` points -> ``[N, 2]``; None without
  scikit-learn."""
  try:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn
  except ImportError:
    return None
  # One OpenMP thread: beside any other load (a second test worker, a training run) the
  # spinning OpenMP threads of the Barnes-Hut gradient made it 2.5-13x slower than one thread
  # on the 2-core machine (2,000 points: 45 s against 18 s; 200 points in a process that had
  # run JAX: 24 s against 1.9 s; 2026-11-30, beside a training run).
  with threadpool_limits(1, user_api="openmp"):
    return TSNE(
      n_components=2, init="pca", random_state=seed, perplexity=min(30.0, len(points) / 4)
    ).fit_transform(points)


def scatter_by_domain_and_class(
  points: np.ndarray,
  domains: np.ndarray,
  labels: np.ndarray,
  path: pathlib.Path,
  *,
  domain_names: Sequence[str],
  title: str,
) -> bool:
  """Two panels of the same 2-D points: coloured by domain, and by class (marker = domain)."""
  plt = _pyplot()
  if plt is None:
    return False
  fig, (by_domain, by_class) = plt.subplots(1, 2, figsize=(11, 5.5))
  markers = ("o", "^", "s", "D")
  for d, name in enumerate(domain_names):
    pts = points[domains == d]
    by_domain.scatter(pts[:, 0], pts[:, 1], s=4, alpha=0.6, label=name)
  by_domain.legend(markerscale=3, fontsize=8)
  by_domain.set_title("by domain", fontsize=10)
  cmap = plt.get_cmap("tab10")
  for d in range(len(domain_names)):
    for c in np.unique(labels):
      pts = points[(domains == d) & (labels == c)]
      by_class.scatter(
        pts[:, 0],
        pts[:, 1],
        s=5,
        color=cmap(int(c) % 10),
        marker=markers[d % 4],
        alpha=0.6,
        label=str(c) if d == 0 else None,
      )
  by_class.legend(markerscale=3, fontsize=8, ncols=2)
  by_class.set_title(
    "by class (" + ", ".join(f"{m} {n}" for m, n in zip(markers, domain_names)) + ")", fontsize=10
  )
  for ax in (by_domain, by_class):
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def learning_curves(rows: list[dict], path: pathlib.Path) -> bool:
  """Every training and evaluation metric against step, one panel each, one line per seed.

  Args:
    rows: the run's ``metrics.jsonl`` rows (``step``, ``seed``, ``split``, metrics).
  """
  plt = _pyplot()
  if plt is None:
    return False

  def keys(split):
    found = {k for r in rows if r["split"] == split for k in r} - {"step", "seed", "split"}
    return sorted(found, key=lambda k: (k != "loss", k))

  panels = [("train", k) for k in keys("train")] + [("eval", k) for k in keys("eval")]
  if not panels:
    return False
  fig, axes = _grid(plt, len(panels), 4, (4.5, 3.4))
  for ax in axes[len(panels) :]:
    ax.axis("off")
  for ax, (split, key) in zip(axes, panels):
    for seed in sorted({r["seed"] for r in rows}):
      pts = [
        (r["step"], r[key]) for r in rows if r["split"] == split and r["seed"] == seed and key in r
      ]
      if pts:
        ax.plot(*zip(*pts), label=f"seed {seed}", marker="." if split == "eval" else None)
    ax.set_xlabel("step")
    ax.set_title(f"{split} {key}")
    ax.grid(alpha=0.3)
  if axes[0].get_legend_handles_labels()[0]:
    axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def seconds_by_size(
  rows: list[dict], series_key: str, series: Sequence[str], title: str, path: pathlib.Path
) -> bool:
  """Benchmark cells as median seconds against ``n`` (log-log), one panel per ``d``, one line
  per value of ``row[series_key]`` in ``series``; cells that did not finish are named in the
  legend (``"out of memory from n = 5000"``). Returns False without matplotlib."""
  plt = _pyplot()
  if plt is None:
    return False
  dims = sorted({r["d"] for r in rows})
  fig, axes = _grid(plt, len(dims), len(dims), (5.5, 4.2))
  for ax, d in zip(axes, dims):
    never = []  # series without a finished cell: named in the legend only
    for name in series:
      cells = sorted(
        (r for r in rows if r[series_key] == name and r["d"] == d), key=lambda r: r["n"]
      )
      points = [(r["n"], r["seconds"]) for r in cells if r["status"] == "ok"]
      failed = [r for r in cells if r["status"] != "ok"]
      # The status's first clause ("failed", "out of memory (> 20 GiB)"): the legend stays short.
      why = failed[0]["status"].split(":")[0] if failed else ""
      label = name + (f" ({why} from n = {failed[0]['n']})" if failed else "")
      if points:
        ax.plot(*zip(*points), marker="o", label=label)
      elif failed:
        never.append(label)
    for label in never:
      ax.plot([], [], marker="x", linestyle="none", label=label)
    if any(np.size(line.get_xdata()) for line in ax.get_lines()):  # log axes need data
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
    ax.set_xlabel("n = m (samples per set)")
    ax.set_ylabel("median seconds")
    ax.set_title(title.format(d=d))
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True

"""``gapmmd curves``: an evaluation metric of several runs in one figure.

The metric against the examples seen (log scale), beside the published curve where the
experiment has one (IIC's official run; the Keras run's 93.86% beside MINE clustering's
probes). Each run directory's ``config.json`` names its experiment and batch size and its
``metrics.jsonl`` holds the evaluations, so a run in progress is drawn as far as it got.
Several seeds in one run give a mean line with a +-std band. ::

  gapmmd curves runs/iic-paper-cpu runs/iic-paper5-cpu --labels "3x3" "5x5" --out iic.png
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

from gapmmd_jax import plotting
from gapmmd_jax.experiments._common import eval_curve
from gapmmd_jax.train import RunDir


def examples_per_step(config: dict) -> int:
  """Examples (image pairs for IIC and MINE) one training step sees per seed: the batch size
  times IIC's transforms per image (``repeats``, 1 elsewhere)."""
  return int(config["batch_size"]) * int(config.get("repeats", 1))


def run_curve(
  run_dir: pathlib.Path, metric: str
) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray | None]:
  """``(config, examples seen, mean %, std % or None)`` of ``metric`` along one run."""
  run = RunDir(run_dir)
  if not run.file("config.json").is_file():
    raise FileNotFoundError(f"{run_dir} is not a run directory: it has no config.json.")
  config = run.read_json("config.json")
  rows = run.read_metrics()
  steps, mean, std = eval_curve(rows, metric)
  if not steps:
    logged = sorted(
      {k for r in rows if r["split"] == "eval" for k in r} - {"step", "seed", "split"}
    )
    raise ValueError(
      f"{run_dir} has no evaluation of {metric!r} yet; its evaluations log: "
      + (", ".join(logged) if logged else "nothing yet")
    )
  return config, np.asarray(steps) * examples_per_step(config), mean, std


def plot(
  run_dirs: list[pathlib.Path], metric: str, out: pathlib.Path, labels: list[str] | None = None
) -> bool:
  """Draws ``metric`` (in %) of every run against the examples seen into ``out``; the
  experiment's published curve beside them where it has one for ``metric``. False without
  matplotlib."""
  from gapmmd_jax.experiments import EXPERIMENTS

  if labels is not None and len(labels) != len(run_dirs):
    raise ValueError(f"{len(labels)} labels for {len(run_dirs)} runs.")
  series, experiments = {}, set()
  for i, run_dir in enumerate(run_dirs):
    config, seen, mean, std = run_curve(run_dir, metric)
    experiments.add(config.get("experiment"))
    seeds = config.get("seeds", [])
    label = labels[i] if labels else f"{run_dir.name} (seeds {seeds})"
    series[label] = (seen, mean, std)
  reference = None
  if len(experiments) == 1:
    module = EXPERIMENTS.get(next(iter(experiments)))
    reference = getattr(module, "REFERENCE_CURVES", {}).get(metric)
  return plotting.curves(
    series,
    out,
    xlabel="examples seen (image pairs for IIC and MINE)",
    ylabel=f"{metric} (%)",
    title=f"{' / '.join(sorted(str(e) for e in experiments))}: {metric}",
    log_x=True,
    reference=reference,
  )


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The options of ``gapmmd curves``."""
  parser.add_argument("runs", nargs="+", type=pathlib.Path, help="run directories")
  parser.add_argument(
    "--metric",
    default="best_head_accuracy",
    help="evaluation metric of metrics.jsonl, drawn in %% (default: IIC's best_head_accuracy; "
    "e.g. accuracy, probe_accuracy, target_accuracy)",
  )
  parser.add_argument("--labels", nargs="+", help="one legend label per run (default: names)")
  parser.add_argument(
    "--out", type=pathlib.Path, default=pathlib.Path("curves.png"), help="PNG to write"
  )


def run(args: argparse.Namespace) -> int:
  """Draws the figure of parsed ``gapmmd curves`` options; the command's exit status."""
  try:
    if not plot(args.runs, args.metric, args.out, args.labels):
      print("gapmmd curves: error: matplotlib is missing (the `plot` extra)", file=sys.stderr)
      return 2
  except (OSError, ValueError) as e:
    print(f"gapmmd curves: error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {args.out}")
  return 0

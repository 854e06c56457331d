"""``gapmmd probe``: how well other probes read the latents of a MINE-clustering run.

Loads the checkpoint of a ``gapmmd mine-cluster`` run directory (a run in progress too),
encodes the training and test images with each seed's encoder (centre crops, BatchNorm's
running statistics) and trains probes on the training latents less the run's validation
rows (the run's ``--probe-validation-size`` and ``--probe-validation-seed``: the rows its own
probe left out): the run's linear probe at other epochs and learning rates (the run's own
settings reproduce its last evaluation), scikit-learn's logistic regression trained to
convergence (the same kind of classifier without the epoch budget), and k nearest neighbours
(no linear boundary: what the latents hold beyond a linear read-out). The scikit-learn
models see the latents standardised by the fitting rows' mean and std, as the linear probe
does. Each probe's validation and test accuracy per seed is printed and written to the run
directory's ``probes.json``. ::

  gapmmd probe runs/mine-keras-cpu --epochs 30 100 200 --logistic-c 1 1e4 --neighbours 10
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
from typing import Any

import jax
import numpy as np

from gapmmd_jax.experiments import mine_cluster
from gapmmd_jax.experiments._common import image_split
from gapmmd_jax.train import RunDir, num_steps

OUT_FILE = "probes.json"


def probe_accuracies(
  cfg: mine_cluster.Config,
  seed: int,
  train: tuple[np.ndarray, np.ndarray],
  test: tuple[np.ndarray, np.ndarray],
  *,
  epochs: list[int],
  learning_rates: list[float],
  logistic_c: list[float],
  neighbours: list[int],
) -> list[dict[str, Any]]:
  """One row ``{"probe", "seed", "validation", "test"}`` (accuracies; ``validation`` None
  without validation rows) per probe on the latents ``train = (z [N, L], labels [N])`` and
  ``test``: the linear probe per epochs x learning rate (key ``seed``, as the run's), logistic
  regression per inverse L2 strength C, k nearest neighbours per k."""
  train_z, train_y = train
  fit_rows, held_out = mine_cluster.probe_rows(cfg, len(train_y))
  sets = {"test": test}
  if len(held_out):
    sets["validation"] = (train_z[held_out], train_y[held_out])
  fit_z, fit_y = train_z[fit_rows], train_y[fit_rows]
  results: dict[str, dict[str, float]] = {}
  for n in epochs:
    for lr in learning_rates:
      settings = dataclasses.replace(cfg, probe_epochs=n, probe_learning_rate=lr)
      results[f"linear probe, {n} epoch{'s' * (n != 1)}, Adam {lr:g}"] = mine_cluster.honest_probe(
        settings, jax.random.key(seed), train_z, train_y, *test
      )
  if logistic_c or neighbours:
    try:
      from sklearn.linear_model import LogisticRegression
      from sklearn.neighbors import KNeighborsClassifier
    except ImportError as e:
      raise ImportError(
        "--logistic-c and --neighbours need scikit-learn (the `plot` extra); pass them "
        "without values to leave them out."
      ) from e
    names = list(sets)
    fit_std, *eval_std = mine_cluster.standardised(fit_z, *(sets[name][0] for name in names))
    models = [
      (f"logistic regression, C = {c:g}", LogisticRegression(C=c, max_iter=5000))
      for c in logistic_c
    ]
    models += [(f"{k} nearest neighbours", KNeighborsClassifier(n_neighbors=k)) for k in neighbours]
    for name, model in models:
      model.fit(fit_std, fit_y)
      results[name] = {
        set_name: float(model.score(z, sets[set_name][1])) for set_name, z in zip(names, eval_std)
      }
  return [
    {"probe": name, "seed": seed, "validation": acc.get("validation"), "test": acc["test"]}
    for name, acc in results.items()
  ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The options of ``gapmmd probe``."""
  parser.add_argument("run", type=pathlib.Path, help="a mine-cluster run directory")
  parser.add_argument(
    "--epochs", type=int, nargs="+", help="epochs of the linear probe (default: the run's)"
  )
  parser.add_argument(
    "--learning-rates",
    type=float,
    nargs="+",
    help="Adam learning rates of the linear probe (default: the run's)",
  )
  parser.add_argument(
    "--logistic-c",
    type=float,
    nargs="*",
    default=[1.0],
    help="inverse L2 strengths of scikit-learn's LogisticRegression (L-BFGS, max_iter 5000); "
    "default 1; the flag alone leaves it out",
  )
  parser.add_argument(
    "--neighbours",
    type=int,
    nargs="*",
    default=[10],
    help="k of the k-nearest-neighbours classifier (Euclidean); default 10; the flag alone "
    "leaves it out",
  )
  parser.add_argument(
    "--data-dir",
    help="directory with the MNIST IDX files (default: the run's, else $GAPMMD_DATA_DIR)",
  )


def _checked(args: argparse.Namespace, cfg: mine_cluster.Config, num_fit: int) -> dict[str, list]:
  """The probes' settings of ``args`` (the run's linear probe where none given), checked."""
  settings = {
    "epochs": args.epochs or [cfg.probe_epochs],
    "learning_rates": args.learning_rates or [cfg.probe_learning_rate],
    "logistic_c": args.logistic_c,
    "neighbours": args.neighbours,
  }
  for name in ("epochs", "neighbours"):
    if any(v < 1 for v in settings[name]):
      raise ValueError(f"--{name} must be >= 1, got {settings[name]}.")
  for name in ("learning_rates", "logistic_c"):
    if not all(np.isfinite(v) and v > 0 for v in settings[name]):
      raise ValueError(f"--{name.replace('_', '-')} must be finite and > 0, got {settings[name]}.")
  if any(k > num_fit for k in settings["neighbours"]):
    raise ValueError(
      f"--neighbours must be <= the {num_fit} latents the probes fit, got {settings['neighbours']}."
    )
  return settings


def probe_run(args: argparse.Namespace) -> dict[str, Any]:
  """The probes of parsed ``gapmmd probe`` options, as written to ``probes.json``."""
  run = RunDir(args.run)
  cfg, step, encoders = mine_cluster.saved_encoders(run)
  if args.data_dir is not None:
    cfg = dataclasses.replace(cfg, data_dir=args.data_dir)
  train, test = image_split(cfg, "train"), image_split(cfg, "test")
  fit_rows, held_out = mine_cluster.probe_rows(cfg, len(train["label"]))
  settings = _checked(args, cfg, len(fit_rows))
  encode = mine_cluster.latent_encoder(cfg)
  rows = []
  for seed, (params, stats) in zip(cfg.seeds, encoders):
    print(
      f"seed {seed}: encoding {len(train['label']):,} training and {len(test['label']):,} "
      "test images ...",
      file=sys.stderr,
      flush=True,
    )
    rows += probe_accuracies(
      cfg,
      seed,
      (encode(params, stats, train["image"]), train["label"]),
      (encode(params, stats, test["image"]), test["label"]),
      **settings,
    )
  steps_per_epoch, _ = num_steps(cfg, len(train["label"]))
  return {
    "run": str(run.path),
    "step": step,
    "epochs_trained": step / steps_per_epoch,
    "fit_rows": len(fit_rows),
    "validation_rows": len(held_out),
    "test_rows": len(test["label"]),
    "probes": rows,
  }


def _table(report: dict[str, Any]) -> str:
  width = max(len(r["probe"]) for r in report["probes"])
  lines = [
    f"{report['run']}: checkpoint at step {report['step']} ({report['epochs_trained']:.1f} "
    f"epochs); probes fit on {report['fit_rows']:,} training latents, "
    f"{report['validation_rows']:,} left out for validation",
    f"{'seed':>4}  {'probe':<{width}}  validation    test",
  ]
  for r in report["probes"]:
    validation = "-" if r["validation"] is None else f"{100 * r['validation']:.2f}%"
    lines.append(f"{r['seed']:>4}  {r['probe']:<{width}}  {validation:>10}  {100 * r['test']:.2f}%")
  return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
  """Runs parsed ``gapmmd probe`` options; the command's exit status."""
  try:
    report = probe_run(args)
  except (ImportError, OSError, ValueError) as e:
    print(f"gapmmd probe: error: {e}", file=sys.stderr)
    return 2
  print(_table(report))
  RunDir(args.run).write_json(OUT_FILE, report)
  print(f"wrote {args.run / OUT_FILE}")
  return 0

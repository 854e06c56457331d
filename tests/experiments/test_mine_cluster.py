"""Experiment 4c (MINE clustering): the linear probe, and a smoke run."""

import json

import jax
import numpy as np

from gapmmd_jax import cli
from gapmmd_jax.experiments import mine_cluster


def test_linear_probe_separates_separable_latents():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(10, 5)) * 4.0
  y = rng.integers(0, 10, 3000)
  z = (centres[y] + rng.normal(size=(3000, 5))).astype(np.float32)
  accuracy = mine_cluster.linear_probe(
    jax.random.key(0), z[:2000], y[:2000], z[2000:], y[2000:], epochs=20, learning_rate=1e-2
  )
  assert accuracy > 0.95
  shuffled = mine_cluster.linear_probe(
    jax.random.key(0),
    z[:2000],
    rng.permutation(y[:2000]),
    z[2000:],
    y[2000:],
    epochs=20,
    learning_rate=1e-2,
  )
  assert shuffled < 0.3  # nothing to learn from shuffled labels


def test_quick_run(mnist_dir, tmp_path):
  """The Keras recipe's separate BatchNorm passes on the quick sizes."""
  assert (
    cli.main(
      [
        "mine-cluster",
        "--variant",
        "quick",
        "--data-dir",
        str(mnist_dir),
        "--out-dir",
        str(tmp_path),
        "--run-name",
        "q",
        "--no-progress",
        "--batchnorm",
        "separate",
      ]
    )
    == 0
  )
  assert json.loads((tmp_path / "q" / "config.json").read_text())["batchnorm"] == "separate"
  summary = json.loads((tmp_path / "q" / "summary.json").read_text())
  for name in ("probe_accuracy", "probe_trained_on_test_accuracy"):
    assert 0.1 <= summary[name]["mean"] <= 1.0
  rows = [json.loads(line) for line in (tmp_path / "q" / "metrics.jsonl").read_text().splitlines()]
  assert all(np.isfinite(r["mi_bound"]) for r in rows)
  assert {r["split"] for r in rows} == {"train", "eval"}

"""Experiment 4a (IIC): matched accuracy, a smoke run whose loss decreases."""

import json

import numpy as np
import pytest

from gapmmd_jax import cli
from gapmmd_jax.metrics import cluster_accuracy, matched_accuracy


def test_matched_accuracy_equals_cluster_accuracy():
  rng = np.random.default_rng(0)
  labels, clusters = rng.integers(0, 10, 500), rng.integers(0, 12, 500)
  counts = np.zeros((12, 10))
  np.add.at(counts, (clusters, labels), 1)
  assert matched_accuracy(counts) == pytest.approx(cluster_accuracy(labels, clusters))
  assert matched_accuracy(counts / 500) == pytest.approx(cluster_accuracy(labels, clusters))
  with pytest.raises(ValueError, match="non-negative"):
    matched_accuracy(-counts)


def test_quick_run_learns_and_reports_heads(mnist_dir, tmp_path):
  assert cli.main(["iic", "--variant", "quick", "--data-dir", str(mnist_dir), "--out-dir",
                   str(tmp_path), "--run-name", "q", "--no-progress", "--epochs", "2"]) == 0
  run = tmp_path / "q"
  summary = json.loads((run / "summary.json").read_text())
  heads = summary["heads"][0]
  assert len(heads["head_accuracies"]) == 2
  assert heads["best_head_accuracy"] == max(heads["head_accuracies"]) > 0.1
  assert 0 <= heads["lowest_loss_head"] < 2
  rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
  train = [r["loss"] for r in rows if r["split"] == "train"]
  assert np.mean(train[-2:]) < np.mean(train[:2]) - 0.1  # the IIC loss falls
  evaluation = [r for r in rows if r["split"] == "eval"]
  assert {"accuracy_head_0", "accuracy_head_1", "best_head_accuracy"} <= set(evaluation[-1])
  assert (run / "curves.png").is_file()

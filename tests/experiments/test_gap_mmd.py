"""Smoke run of GAP-LeNet's quick variant on real MNIST through the CLI."""

import json

import numpy as np

from gapmmd_jax import cli


def test_quick_variant_end_to_end(mnist_dir, tmp_path, capsys):
  assert cli.main(["gap-mmd", "--variant", "quick", "--data-dir", str(mnist_dir), "--out-dir",
                   str(tmp_path), "--run-name", "quick", "--no-progress", "--seeds", "0", "1",
                   "--max-train-examples", "1024", "--epochs", "1"]) == 0
  out = capsys.readouterr().out
  assert "test accuracy" in out and "mean +- std" in out
  run = tmp_path / "quick"
  for name in ("config.json", "metrics.jsonl", "summary.json", "curves.png", "README.txt"):
    assert (run / name).is_file(), name
  summary = json.loads((run / "summary.json").read_text())
  accuracy = summary["final_eval"]["accuracy"]
  assert len(accuracy["per_seed"]) == 2 and np.isfinite(accuracy["mean"])
  assert accuracy["per_seed"][0] != accuracy["per_seed"][1]  # independent seeds
  assert 0.0 <= accuracy["mean"] <= 1.0

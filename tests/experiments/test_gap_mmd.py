"""Smoke runs of experiments 1 and 2 (quick variants) on real MNIST through the CLI."""

import json

import numpy as np
import pytest

from gapmmd_jax import cli
from gapmmd_jax.experiments import metric_survey


@pytest.fixture(scope="module")
def gap_run(mnist_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp("runs")
  assert (
    cli.main(
      [
        "gap-mmd",
        "--variant",
        "quick",
        "--data-dir",
        str(mnist_dir),
        "--out-dir",
        str(out),
        "--run-name",
        "quick",
        "--no-progress",
        "--seeds",
        "0",
        "1",
        "--mmd-reg",
        "0.5",
        "--max-shift",
        "1",
      ]
    )
    == 0
  )
  return out / "quick"


def test_gap_mmd_writes_every_artefact(gap_run):
  for name in (
    "config.json",
    "metrics.jsonl",
    "summary.json",
    "curves.png",
    "README.txt",
    "gap_features.npy",
    "class_mmd.npy",
    "class_mmd_pvalues.npy",
    "class_mmd.png",
    "cam_grid.png",
    "sample_size_sweep.png",
  ):
    assert (gap_run / name).is_file(), name
  summary = json.loads((gap_run / "summary.json").read_text())
  accuracy = summary["final_eval"]["accuracy"]
  assert len(accuracy["per_seed"]) == 2 and accuracy["per_seed"][0] != accuracy["per_seed"][1]
  assert summary["mmd_reg"] == 0.5 and len(summary["class_gap"]) == 2
  features = np.load(gap_run / "gap_features.npy")
  assert features.shape == (2, 10, 40, 64) and np.all(np.isfinite(features))
  std = features[0].reshape(-1, 64).std(0)
  # Standardised: std 1, or below 1 for (nearly) dead units whose raw std is under 1e-6.
  assert np.all(np.isclose(std, 1.0, atol=1e-3) | (std < 1.0))
  assert np.mean(np.isclose(std, 1.0, atol=1e-3)) > 0.5
  pvalues = np.load(gap_run / "class_mmd_pvalues.npy")
  assert pvalues.shape == (2, 10, 10) and np.all((pvalues >= 1 / 201 - 1e-6) & (pvalues <= 1))
  sweep = summary["sample_size_sweep"]
  assert sweep["sizes"][0] == 1
  assert sweep["diagonal_mean"][0] == pytest.approx(sweep["off_diagonal_mean"][0], rel=1e-4)
  rows = [json.loads(line) for line in (gap_run / "metrics.jsonl").read_text().splitlines()]
  assert any("class_gap" in r for r in rows if r["split"] == "train")


def test_metric_survey_on_a_gap_run(gap_run, capsys):
  assert cli.main(["metric-survey", "--variant", "quick", "--gap-run", str(gap_run)]) == 0
  assert "same distribution" in capsys.readouterr().out
  survey_dir = gap_run / "survey"
  for name in ("survey.json", "survey.md", "distances.png", "tsne.png", "README.txt"):
    assert (survey_dir / name).is_file(), name
  result = json.loads((survey_dir / "survey.json").read_text())
  assert len(result["ranking"]) == len(metric_survey.distances(metric_survey.VARIANTS["quick"]))
  scores = [(r["rows_diagonal_best"], r["offdiag_to_diag"]) for r in result["ranking"]]
  assert scores == sorted(scores, key=lambda s: (-s[0], -s[1]))
  assert result["demo"]["different"] > 5 * result["demo"]["same"] > 0


def test_random_distribution_demo_is_seeded():
  assert metric_survey.random_distribution_demo(0) == metric_survey.random_distribution_demo(0)

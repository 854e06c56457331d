"""`gapmmd curves`: runs' evaluation curves read back and drawn against the examples seen."""

import json

import numpy as np
import pytest

from gapmmd_jax import cli, curves
from gapmmd_jax.experiments import iic


def _write_run(path, config, evaluations):
  """A run directory as the harness leaves it: config.json and metrics.jsonl (train rows too)."""
  path.mkdir(parents=True)
  (path / "config.json").write_text(json.dumps(config))
  rows = [{"step": s, "seed": seed, "split": "train", "loss": -1.0} for s, seed, _ in evaluations]
  rows += [{"step": s, "seed": seed, "split": "eval", **m} for s, seed, m in evaluations]
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def test_examples_seen_and_seed_statistics(tmp_path):
  run = _write_run(
    tmp_path / "iic",
    {"experiment": "iic", "batch_size": 140, "repeats": 5, "seeds": [0, 1]},
    [
      (100, 0, {"best_head_accuracy": 0.5}),
      (100, 1, {"best_head_accuracy": 0.7}),
      (200, 0, {"best_head_accuracy": 0.9}),
      (200, 1, {"best_head_accuracy": 0.9}),
    ],
  )
  config, seen, mean, std = curves.run_curve(run, "best_head_accuracy")
  assert config["experiment"] == "iic"
  np.testing.assert_array_equal(seen, [70_000, 140_000])  # steps x 140 images x 5 transforms
  np.testing.assert_allclose(mean, [60.0, 90.0])
  np.testing.assert_allclose(std, [10.0, 0.0])
  single = _write_run(
    tmp_path / "mine",
    {"experiment": "mine-cluster", "batch_size": 256, "seeds": [0]},
    [(390, 0, {"probe_accuracy": 0.8})],
  )
  _, seen, mean, std = curves.run_curve(single, "probe_accuracy")
  assert seen.tolist() == [390 * 256] and mean.tolist() == [80.0] and std is None


def test_the_command_draws_runs_beside_the_official_curve(tmp_path, capsys):
  runs = [
    _write_run(
      tmp_path / name,
      {"experiment": "iic", "batch_size": 140, "repeats": 5, "seeds": [0]},
      [(s, 0, {"best_head_accuracy": a}) for s, a in ((100, 0.4), (200, 0.6 + i / 10))],
    )
    for i, name in enumerate(("a", "b"))
  ]
  assert iic.REFERENCE_CURVES["best_head_accuracy"][1][-1] == 99.2  # the 31M-pair point
  out = tmp_path / "cmp.png"
  argv = ["curves", *map(str, runs), "--labels", "3x3", "5x5", "--out", str(out)]
  assert cli.main(argv) == 0
  assert out.stat().st_size > 0 and str(out) in capsys.readouterr().out


@pytest.mark.parametrize(
  "argv_tail, message",
  [
    (["missing"], "is not a run directory"),
    (["a", "--metric", "probe_accuracy"], "no evaluation of 'probe_accuracy' yet; its evaluations"),
    (["a", "--labels", "one", "two"], "2 labels for 1 runs"),
  ],
)
def test_bad_input_gets_a_clear_error(tmp_path, capsys, argv_tail, message):
  _write_run(
    tmp_path / "a",
    {"experiment": "iic", "batch_size": 140, "seeds": [0]},
    [(100, 0, {"best_head_accuracy": 0.5})],
  )
  argv_tail = [str(tmp_path / a) if a in ("a", "missing") else a for a in argv_tail]
  assert cli.main(["curves", *argv_tail, "--out", str(tmp_path / "x.png")]) == 2
  assert message in capsys.readouterr().err
  assert not (tmp_path / "x.png").exists()

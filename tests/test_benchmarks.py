"""Smoke runs of the benchmarks on tiny sizes: every cell reported, files written."""

import json

import numpy as np
import pytest

from gapmmd_jax import _xla_flags, cli
from gapmmd_jax.benchmarks import train_step


def test_mmd_throughput_smoke(tmp_path, capsys):
  ours = ("ours-auto", "ours-tiled", "ours-auto-ynn-off")
  assert (
    cli.main(
      [
        "bench",
        "mmd",
        "--n",
        "128",
        "--d",
        "3",
        "--impls",
        *ours,
        "jax-naive",
        "yardstick",
        "--max-seconds",
        "1",
        "--out",
        str(tmp_path),
      ]
    )
    == 0
  )
  result = json.loads((tmp_path / "mmd_throughput.json").read_text())
  rows = {r["impl"]: r for r in result["rows"]}
  assert set(rows) == {*ours, "jax-naive", "yardstick"}
  for name in (*ours, "jax-naive"):
    assert rows[name]["status"] == "ok" and rows[name]["seconds"] > 0
    assert rows[name]["relative_error"] < 1e-4
    assert rows[name]["vs_yardstick"] > 0
  assert rows["ours-auto-ynn-off"]["xla_flags"].endswith("=-reduce")
  assert (tmp_path / "mmd_throughput.md").read_text().count("| ours-") == 3
  assert (tmp_path / "mmd_throughput.png").is_file()


def test_mmd_throughput_value_and_grad_cells(tmp_path):
  """Gradient cells beside the forward ones: checked against float64, costed in forward passes;
  the yardstick has no gradient cell."""
  assert (
    cli.main(
      [
        "bench",
        "mmd",
        "--n",
        "100",
        "--d",
        "3",
        "--impls",
        "ours-auto",
        "jax-naive",
        "yardstick",
        "--modes",
        "forward",
        "value-and-grad",
        "--max-seconds",
        "1",
        "--out",
        str(tmp_path),
      ]
    )
    == 0
  )
  rows = json.loads((tmp_path / "mmd_throughput.json").read_text())["rows"]
  cells = {(r["impl"], r["mode"]): r for r in rows}
  assert set(cells) == {
    ("ours-auto", "forward"),
    ("jax-naive", "forward"),
    ("yardstick", "forward"),
    ("ours-auto", "value-and-grad"),
    ("jax-naive", "value-and-grad"),
  }
  for impl in ("ours-auto", "jax-naive"):
    grad = cells[impl, "value-and-grad"]
    assert grad["status"] == "ok" and grad["relative_error"] < 1e-4
    assert grad["grad_relative_error"] < 1e-3
    assert grad["vs_forward"] == grad["seconds"] / cells[impl, "forward"]["seconds"]
    assert "vs_yardstick" not in grad and "vs_forward" not in cells[impl, "forward"]
  table = (tmp_path / "mmd_throughput.md").read_text()
  assert "| ours-auto, value+grad |" in table and "of its forward" in table


def test_mmd_throughput_reports_out_of_memory(tmp_path):
  assert (
    cli.main(
      [
        "bench",
        "mmd",
        "--n",
        "2048",
        "--d",
        "64",
        "--impls",
        "jax-naive",
        "--memory-limit-gib",
        "0.3",
        "--float64-max-n",
        "0",
        "--out",
        str(tmp_path),
      ]
    )
    == 0
  )
  row = json.loads((tmp_path / "mmd_throughput.json").read_text())["rows"][0]
  assert row["status"].startswith("out of memory")


def test_two_sample_test_smoke(tmp_path):
  """Our tests and the K @ E yardstick always; a missing anchor folder is reported per cell,
  not a crash."""
  assert (
    cli.main(
      [
        "bench",
        "test",
        "--n",
        "64",
        "--d",
        "3",
        "--draws",
        "50",
        "--repeats",
        "1",
        "--tests",
        "ours-permutation",
        "ours-wild",
        "ours-fuse",
        "ours-agg",
        "mmdagg",
        "yardstick",
        "--anchors",
        str(tmp_path / "no-anchors"),
        "--out",
        str(tmp_path),
      ]
    )
    == 0
  )
  rows = {r["test"]: r for r in json.loads((tmp_path / "two_sample_test.json").read_text())["rows"]}
  for name in ("ours-permutation", "ours-wild", "ours-fuse", "ours-agg"):
    assert rows[name]["status"] == "ok" and rows[name]["seconds"] > 0
  for name in ("ours-permutation", "ours-wild", "ours-fuse"):
    assert all(1 / 51 <= p <= 1 for p in rows[name]["results"])
  assert rows["ours-agg"]["results"] in ([0], [1])  # the decision
  assert rows["yardstick"]["status"] == "ok" and rows["yardstick"]["results"] == []
  for name in ("ours-permutation", "ours-wild"):  # their time in yardsticks
    assert rows[name]["vs_yardstick"] == pytest.approx(
      rows[name]["seconds"] / rows["yardstick"]["seconds"]
    )
  assert all(rows[name]["extra_memory_gib"] >= 0 for name in rows if name != "mmdagg")
  assert (tmp_path / "two_sample_test.png").stat().st_size > 0
  status = rows["mmdagg"]["status"]
  assert status.startswith("not installed") and "no-anchors" in status
  assert (
    "| ours-wild | 1 kernel (5 bandwidths), 50 wild-bootstrap draws | 64 |"
    in (tmp_path / "two_sample_test.md").read_text()
  )


def test_two_sample_test_chunk_and_block_size_reach_our_tests(tmp_path):
  """--chunk-size / --block-size go to our tests and into the outputs; the draws do not depend
  on them (draw r from fold_in(key, r)), so the p-values match the defaults' within rounding
  (one draw of 50)."""

  def p_values(out, *tiling):
    argv = ["bench", "test", "--n", "64", "--d", "3", "--draws", "50", "--repeats", "1"]
    assert cli.main([*argv, "--tests", "ours-fuse", "--out", str(out), *tiling]) == 0
    return json.loads((out / "two_sample_test.json").read_text())

  default = p_values(tmp_path / "default")
  tiled = p_values(tmp_path / "tiled", "--chunk-size", "7", "--block-size", "32")
  assert tiled["meta"]["chunk_size"] == 7 and tiled["meta"]["block_size"] == 32
  assert default["meta"]["chunk_size"] is None
  assert (
    "Our tests with chunk_size = 7, block_size = 32."
    in (tmp_path / "tiled" / "two_sample_test.md").read_text()
  )
  (row,), (default_row,) = tiled["rows"], default["rows"]
  assert row["status"] == "ok"
  assert np.allclose(row["results"], default_row["results"], atol=1 / 51 + 1e-6)


def test_bench_rejects_unknown_names():
  with pytest.raises(SystemExit):
    cli.main(["bench", "nope"])


@pytest.mark.parametrize(
  "argv, message",
  [
    (["mmd", "--n", "0"], "argument --n: must be >= 1 and finite, got '0'"),
    (["mmd", "--n", "-5"], "argument --n: must be >= 1 and finite, got '-5'"),
    (["mmd", "--n", "1.5"], "argument --n: must be an integer, got '1.5'"),
    (["mmd", "--d", "64", "--impls", "ours-fast"], "argument --impls: invalid choice: 'ours-fast'"),
    (["mmd", "--max-seconds", "nan"], "argument --max-seconds: must be >= 0.0 and finite"),
    (["train", "--timeout", "0"], "argument --timeout: must be > 0, got '0'"),
    (["seed-axis", "--seeds", "0"], "argument --seeds: must be >= 1 and finite, got '0'"),
    (["test", "--repeats", "-1"], "argument --repeats: must be >= 0 and finite, got '-1'"),
    (["test", "--tests", "ours-fast"], "argument --tests: invalid choice: 'ours-fast'"),
    (["test", "--chunk-size", "0"], "argument --chunk-size: must be >= 1 and finite, got '0'"),
  ],
)
def test_bench_rejects_bad_arguments(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["bench", *argv])
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err


def test_train_step_smoke(mnist_dir, tmp_path):
  assert (
    cli.main(
      [
        "bench",
        "train",
        "--models",
        "gap-lenet",
        "--cells",
        "jax",
        "jax-2dev",
        "jax-auto",
        "jax-8steps",
        "torch-eager",
        "--max-seconds",
        "0.5",
        "--data-dir",
        str(mnist_dir),
        "--out",
        str(tmp_path),
      ]
    )
    == 0
  )
  rows = {r["cell"]: r for r in json.loads((tmp_path / "train_step.json").read_text())["rows"]}
  auto_devices = _xla_flags.choose("auto", "gap-mmd", batch_size=128)[1].host_devices
  for cell, devices in (("jax", 1), ("jax-2dev", 2), ("jax-auto", auto_devices), ("jax-8steps", 1)):
    assert rows[cell]["status"] == "ok" and rows[cell]["devices"] == devices
    assert rows[cell]["images_per_second_per_seed"] == pytest.approx(128 / rows[cell]["seconds"])
  # PyTorch is an optional extra: measured where installed, reported as missing elsewhere.
  assert rows["torch-eager"]["status"] == "ok" or "not installed" in rows["torch-eager"]["status"]
  assert "| gap-lenet |" in (tmp_path / "train_step.md").read_text()
  assert "auto / fastest" in (tmp_path / "train_step.md").read_text()
  # A step with per-seed data (the semi-supervised MLP's labelled subset) and no PyTorch cell.
  argv = ["bench", "train", "--models", "vat-mlp", "--cells", "jax", "torch-eager"]
  options = ["--max-seconds", "0.5", "--data-dir", str(mnist_dir), "--out", str(tmp_path)]
  assert cli.main(argv + options) == 0
  rows = json.loads((tmp_path / "train_step.json").read_text())["rows"]
  assert [(r["model"], r["cell"], r["status"]) for r in rows] == [("vat-mlp", "jax", "ok")]
  assert rows[0]["images_per_second_per_seed"] == pytest.approx(350 / rows[0]["seconds"])


@pytest.mark.parametrize("model", train_step.MODELS)
def test_train_step_tasks_build(model, mnist_dir, bsds_dir, monkeypatch):
  # Every model's small task builds (compiling and timing them is the smoke test's job).
  monkeypatch.setenv("GAPMMD_BSDS_DIR", str(bsds_dir))
  task = train_step._jax_task(model, str(mnist_dir))
  assert task.train_data and all(0 < len(v) <= 2048 for v in task.train_data.values())


def test_seed_axis_smoke(mnist_dir, tmp_path):
  assert (
    cli.main(
      [
        "bench",
        "seed-axis",
        "--seeds",
        "2",
        "--repeats",
        "1",
        "--data-dir",
        str(mnist_dir),
        "--out",
        str(tmp_path),
      ]
    )
    == 0
  )
  rows = {r["variant"]: r for r in json.loads((tmp_path / "seed_axis.json").read_text())["rows"]}
  assert rows["one seed"]["cost_vs_one_seed"] == 1.0
  for name in (
    "vmap",
    "unroll",
    "lax.map",
    "conv2 fwd+bwd, grouped conv",
    "conv2 fwd+bwd, im2col + batched matmul",
  ):
    assert rows[name]["seeds"] == 2 and rows[name]["median_ms"] > 0

"""Experiment 5 (VAT): the model, the labelled subset, and smoke runs of the table."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from gapmmd_jax import cli
from gapmmd_jax.experiments import vat
from gapmmd_jax.models import VatCNN

SMALL = ["--variant", "quick", "--max-train-examples", "1024", "--max-eval-examples", "1000",
         "--no-progress"]


def test_dropout_only_with_a_key():
  x = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1))
  model = VatCNN(dropout=True, rngs=nnx.Rngs(0))
  assert model(x).shape == (4, 10)
  np.testing.assert_array_equal(model(x), model(x))
  key = jax.random.key(1)
  np.testing.assert_array_equal(model(x, key), model(x, key))
  assert not np.allclose(model(x, key), model(x))
  plain = VatCNN(dropout=False, rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(plain(x, key), plain(x))


def test_labelled_subset():
  labels = np.repeat(np.arange(10), 7)[np.random.default_rng(0).permutation(70)]
  index = vat.labelled_subset(labels, 3, seed=5)
  assert index.shape == (30,) and len(set(index)) == 30
  np.testing.assert_array_equal(np.bincount(labels[index]), np.full(10, 3))
  np.testing.assert_array_equal(index, vat.labelled_subset(labels, 3, seed=5))
  with pytest.raises(ValueError, match="class 0 has only 7"):
    vat.labelled_subset(labels, 8, seed=0)


def test_table_per_seed_values_match_single_seed_runs(mnist_dir, tmp_path, capsys):
  common = [*SMALL, "--data-dir", str(mnist_dir), "--out-dir", str(tmp_path)]
  assert cli.main(["vat", *common, "--table", "--seeds", "0", "1", "--run-name", "table"]) == 0
  table_dir = tmp_path / "table"
  table = json.loads((table_dir / "table.json").read_text())
  assert [r["configuration"] for r in table["rows"]] == ["neither", "dropout", "VAT", "both"]
  markdown = (table_dir / "table.md").read_text()
  assert "| VAT |" in markdown and "x no VAT" in markdown
  for row in table["rows"]:
    assert len(row["accuracy"]["per_seed"]) == 2 and row["seconds_per_epoch"] > 0
    assert (table_dir / row["configuration"] / "summary.json").is_file()
  assert "| both |" in capsys.readouterr().out

  assert cli.main(["vat", *common, "--seeds", "1", "--no-dropout", "--run-name", "single"]) == 0
  single = json.loads((tmp_path / "single" / "summary.json").read_text())["final_eval"]
  vat_row = table["rows"][2]
  assert single["accuracy"]["per_seed"][0] == pytest.approx(vat_row["accuracy"]["per_seed"][1],
                                                            abs=1e-6)
  assert single["loss"]["per_seed"][0] == pytest.approx(vat_row["loss"]["per_seed"][1], rel=1e-4)


def test_semi_supervised_run(mnist_dir, tmp_path):
  assert cli.main(["vat", *SMALL, "--data-dir", str(mnist_dir), "--out-dir", str(tmp_path),
                   "--labels-per-class", "5", "--labelled-batch-size", "20", "--vat-xi", "1e-6",
                   "--epochs", "0.5", "--run-name", "semi"]) == 0
  summary = json.loads((tmp_path / "semi" / "summary.json").read_text())
  assert "5 labels per class" in summary["configuration"]
  assert 0.1 < summary["final_eval"]["accuracy"]["mean"] <= 1.0
  rows = [json.loads(line) for line in (tmp_path / "semi" / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in rows if r["split"] == "train"]
  assert train and all(np.isfinite(r["vat"]) and r["vat"] >= 0 for r in train)


def test_bad_options_are_one_line_errors(capsys):
  assert cli.main(["vat", "--vat-eps", "0"]) == 2
  assert "vat_eps must be > 0" in capsys.readouterr().err
  assert cli.main(["vat", "--labels-per-class", "0"]) == 2
  assert "labels_per_class must be >= 1" in capsys.readouterr().err

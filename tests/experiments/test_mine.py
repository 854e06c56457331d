"""Experiment 4b (MINE on Gaussians): the network, the sampler, convergence, the CLI."""

import json

import jax
import numpy as np
import pytest

from gapmmd_jax import cli
from gapmmd_jax.experiments import mine


def test_statistic_matches_numpy():
  params = mine.init_statistics_network(jax.random.key(0), 16)
  x, y = np.linspace(-2, 2, 7), np.linspace(1, -1, 7)
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  hidden = np.maximum(np.outer(x, p["x"][0]) + np.outer(y, p["y"][0]) + p["bias"], 0.0)
  expected = hidden @ p["out"][:, 0] + p["out_bias"][0]
  np.testing.assert_allclose(mine.statistic(params, x, y), expected, rtol=1e-5, atol=1e-6)


def test_correlated_pairs_have_the_correlation():
  x, y = mine.correlated_pairs(jax.random.key(1), 0.7, 200_000)
  assert np.corrcoef(x, y)[0, 1] == pytest.approx(0.7, abs=0.01)
  assert np.std(y) == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("bias_corrected", [False, True])
def test_converges_to_the_true_mi_at_rho_half(bias_corrected):
  cfg = mine.Config(rhos=(0.5,), seeds=(0,), steps=400, average_last=100)
  bounds = np.asarray(
    mine.make_trainer(cfg, bias_corrected)(
      np.array([0.5], np.float32), jax.vmap(jax.random.key)(np.array([0]))
    )
  )
  assert bounds.shape == (1, 1, 400) and np.all(np.isfinite(bounds))
  assert bounds[0, 0, -100:].mean() == pytest.approx(0.1438, abs=0.02)
  assert bounds[0, 0, :20].mean() < 0.05  # it learned: the bound starts near 0


def test_quick_variant_writes_table_and_plots(tmp_path, capsys):
  assert (
    cli.main(
      ["mine", "--variant", "quick", "--out-dir", str(tmp_path), "--run-name", "q", "--no-progress"]
    )
    == 0
  )
  run = tmp_path / "q"
  for name in ("table.md", "results.json", "estimates.png", "curves.png", "README.txt"):
    assert (run / name).is_file(), name
  rows = json.loads((run / "results.json").read_text())["rows"]
  assert [r["rho"] for r in rows] == [0.5, 0.9]
  assert rows[0]["true"] == pytest.approx(0.143841, abs=1e-5)
  assert rows[0]["histogram"] == pytest.approx(rows[0]["true"], abs=0.02)
  assert "largest |estimate - true|" in capsys.readouterr().out


def test_bad_options():
  with pytest.raises(ValueError, match="rhos"):
    mine.Config(rhos=(1.0,))
  with pytest.raises(ValueError, match="average_last"):
    mine.Config(steps=10, average_last=20)

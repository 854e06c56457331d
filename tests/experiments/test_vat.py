"""Experiment 5 (VAT): the models, the labelled subsets, and smoke runs of the table and the
semi-supervised recipes."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gapmmd_jax import cli
from gapmmd_jax.experiments import vat
from gapmmd_jax.models import VatCNN, VatMLP
from gapmmd_jax.models._vat_mlp import average_stats

SMALL = [
  "--variant",
  "quick",
  "--max-train-examples",
  "1024",
  "--max-eval-examples",
  "1000",
  "--no-progress",
]


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
  # Four steps of 64 images per configuration and seed: the table's bookkeeping, not learning.
  small = ["--max-train-examples", "256", "--max-eval-examples", "250"]
  common = [*SMALL, *small, "--data-dir", str(mnist_dir), "--out-dir", str(tmp_path)]
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
  assert single["accuracy"]["per_seed"][0] == pytest.approx(
    vat_row["accuracy"]["per_seed"][1], abs=1e-6
  )
  assert single["loss"]["per_seed"][0] == pytest.approx(vat_row["loss"]["per_seed"][1], rel=1e-4)


def _mlp_reference(model: VatMLP, x: np.ndarray, stats=None) -> np.ndarray:
  """float64 NumPy forward pass of ``VatMLP``: dense, BatchNorm (batch or given statistics)."""
  h = np.asarray(x, np.float64).reshape(len(x), -1)
  for i, dense in enumerate(model.dense):
    h = h @ np.asarray(dense.kernel[...], np.float64)
    mean, var = (h.mean(0), h.var(0)) if stats is None else map(np.asarray, stats[i])
    h = (h - mean) / np.sqrt(var + model.eps) * np.asarray(model.scale[i][...]) + np.asarray(
      model.shift[i][...]
    )
    if i < len(model.dense) - 1:
      h = np.maximum(h, 0.0)
  return h


def test_mlp_matches_a_float64_reference():
  model = VatMLP((12, 9, 7, 3), rngs=nnx.Rngs(0))
  model.scale[1][...] = jax.random.uniform(jax.random.key(1), (7,), minval=0.5, maxval=2.0)
  model.shift[2][...] = jax.random.normal(jax.random.key(2), (3,))
  x = np.asarray(jax.random.normal(jax.random.key(3), (16, 3, 4)))
  np.testing.assert_allclose(model(x), _mlp_reference(model, x), rtol=1e-4, atol=1e-4)
  # Evaluation with the batch's own statistics is the training-mode function.
  np.testing.assert_allclose(model(x, model.batch_stats(x)), model(x), rtol=1e-5, atol=1e-5)
  other = [(jnp.full((d,), 0.3), jnp.full((d,), 2.0)) for d in (9, 7, 3)]
  np.testing.assert_allclose(model(x, other), _mlp_reference(model, x, other), rtol=1e-4, atol=1e-4)
  assert model.dense[0].kernel[...].std() == pytest.approx(1 / np.sqrt(12), rel=0.35)


def test_population_statistics_average_the_batches():
  batches = np.random.default_rng(0).normal(size=(5, 8, 4)) * np.arange(1, 5)
  per_batch = [(jnp.asarray(batches.mean(1)), jnp.asarray(batches.var(1)))]
  ((mean, var),) = average_stats(per_batch, batch_size=8)
  np.testing.assert_allclose(mean, batches.mean(1).mean(0), rtol=1e-5)
  np.testing.assert_allclose(var, batches.var(1, ddof=1).mean(0), rtol=1e-5)


def test_cycled_rows_visit_every_row_once_per_pass():
  key = jax.random.key(4)
  stream = np.asarray(vat.cycled_rows(jnp.asarray(0), 35, 7, key))
  for p in range(5):
    assert sorted(stream[7 * p : 7 * (p + 1)]) == list(range(7))
  assert not all((stream[:7] == stream[7 * p : 7 * (p + 1)]).all() for p in range(1, 5))
  for start, count in ((0, 3), (5, 9), (20, 15)):
    np.testing.assert_array_equal(
      vat.cycled_rows(jnp.asarray(start), count, 7, key), stream[start : start + count]
    )


def test_semi_supervised_cnn_run(mnist_dir, tmp_path):
  assert (
    cli.main(
      [
        "vat",
        *SMALL,
        "--data-dir",
        str(mnist_dir),
        "--out-dir",
        str(tmp_path),
        "--labels-per-class",
        "5",
        "--labelled-batch-size",
        "20",
        "--vat-xi",
        "1e-6",
        "--epochs",
        "0.5",
        "--run-name",
        "semi",
      ]
    )
    == 0
  )
  summary = json.loads((tmp_path / "semi" / "summary.json").read_text())
  assert "CNN" in summary["configuration"] and "5 labels per class" in summary["configuration"]
  assert 0.1 < summary["final_eval"]["accuracy"]["mean"] <= 1.0
  rows = [
    json.loads(line) for line in (tmp_path / "semi" / "metrics.jsonl").read_text().splitlines()
  ]
  train = [r for r in rows if r["split"] == "train"]
  assert train and all(np.isfinite(r["vat"]) and r["vat"] >= 0 for r in train)


def test_semi_supervised_mlp_run(mnist_dir, tmp_path, capsys):
  """The paper's recipe, small: own labelled subset per seed, validation images held out,
  BatchNorm statistics measured before evaluation; a seed trains the same alone or beside
  another."""
  small = [
    "--variant",
    "semi-supervised",
    "--data-dir",
    str(mnist_dir),
    "--out-dir",
    str(tmp_path),
    "--max-train-examples",
    "1200",
    "--max-eval-examples",
    "500",
    "--validation-size",
    "200",
    "--batch-size",
    "50",
    "--labels-per-class",
    "3",
    "--labelled-batch-size",
    "20",
    "--epochs",
    "2",
    "--eval-every",
    "20",
    "--no-progress",
    "--entropy-weight",
    "0.5",
  ]
  assert cli.main(["vat", *small, "--seeds", "0", "1", "--run-name", "two"]) == 0
  assert "MLP with BatchNorm" in capsys.readouterr().out
  two = json.loads((tmp_path / "two" / "summary.json").read_text())
  assert two["steps"] == 40  # (1200 - 200) // 50 steps per epoch
  for name in ("accuracy", "validation_accuracy"):
    assert all(0.3 < a <= 1.0 for a in two["final_eval"][name]["per_seed"])
  rows = [
    json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
  ]
  assert all(np.isfinite(r["entropy"]) and r["entropy"] > 0 for r in rows if r["split"] == "train")
  assert cli.main(["vat", *small, "--seeds", "1", "--run-name", "one"]) == 0
  one = json.loads((tmp_path / "one" / "summary.json").read_text())
  for name in ("accuracy", "validation_accuracy", "loss"):
    assert one["final_eval"][name]["per_seed"][0] == pytest.approx(
      two["final_eval"][name]["per_seed"][1], rel=1e-3
    )


def test_labelled_subsets_differ_per_seed_and_avoid_validation(mnist_dir):
  cfg = dataclasses.replace(
    vat.VARIANTS["semi-supervised"],
    data_dir=str(mnist_dir),
    max_train_examples=3000,
    max_eval_examples=100,
    validation_size=500,
  )
  task = vat.build_task(cfg)
  assert len(task.train_data["image"]) == 2500 and "label" not in task.train_data
  assert len(task.eval_data["label"]) == 600
  first, second = task.seed_data(0), task.seed_data(1)
  assert first["image"].shape == (100, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(first["label"]), np.full(10, 10))
  assert not np.array_equal(first["image"], second["image"])
  validation = task.eval_data["image"][100:]
  assert not any((validation == image).all(axis=(1, 2, 3)).any() for image in first["image"])


def test_bad_options_are_one_line_errors(capsys):
  assert cli.main(["vat", "--vat-eps", "0"]) == 2
  assert "vat_eps must be > 0" in capsys.readouterr().err
  assert cli.main(["vat", "--labels-per-class", "0"]) == 2
  assert "labels_per_class must be >= 1" in capsys.readouterr().err
  assert cli.main(["vat", "--model", "mlp"]) == 2
  assert "pass --no-dropout" in capsys.readouterr().err
  assert cli.main(["vat", "--entropy-weight", "-1"]) == 2
  assert "entropy_weight must be >= 0" in capsys.readouterr().err


def _reference_semi_supervised_loss(layers, labelled, labels, unlabelled, d0, xi, eps):
  """The semi-supervised VAT-MLP loss from its formulas, in float64 (under ``enable_x64``):
  cross-entropy on the labelled batch plus KL(p(x) || p(x + r_adv)) on the unlabelled one,
  every pass normalised with its own batch's statistics; ``r_adv`` from one power
  iteration, the gradient of the KL at ``xi d`` (a finite difference, exact to O(xi))."""

  def forward(x):
    h = x.reshape(len(x), -1)
    for i, (kernel, scale, shift) in enumerate(layers):
      h = h @ kernel
      mean = h.mean(0)
      var = ((h - mean) ** 2).mean(0)
      h = (h - mean) / jnp.sqrt(var + 1e-6) * scale + shift
      if i < len(layers) - 1:
        h = jnp.maximum(h, 0.0)
    return h

  log_q = jax.nn.log_softmax(forward(labelled))
  cross_entropy = -jnp.mean(jnp.take_along_axis(log_q, labels[:, None], axis=1))
  log_p = jax.lax.stop_gradient(jax.nn.log_softmax(forward(unlabelled)))

  def kl(r):  # [B]
    return jnp.sum(jnp.exp(log_p) * (log_p - jax.nn.log_softmax(forward(unlabelled + r))), 1)

  unit = lambda v: v / jnp.linalg.norm(v.reshape(len(v), -1), axis=1).reshape(-1, 1, 1, 1)
  direction = jax.grad(lambda r: jnp.sum(kl(r)))(xi * unit(d0))
  r_adv = jax.lax.stop_gradient(eps * unit(direction))
  return cross_entropy + jnp.mean(kl(r_adv))


@pytest.mark.parametrize("finite_difference,xi", [("linearized", 1e-6), ("direct", 1.0)])
def test_semi_supervised_mlp_gradient_matches_a_float64_reference(finite_difference, xi):
  """One update's gradient (every parameter) of the semi-supervised recipe's loss, float32,
  against the formulas in float64 on the same batches and the same initial direction:
  the exact power iteration (linearized) at the recipe's xi = 1e-6, and the papers' direct
  finite difference at xi = 1, where float32 resolves it (at 1e-6 it is rounding noise)."""
  cfg = dataclasses.replace(
    vat.VARIANTS["semi-supervised"], vat_finite_difference=finite_difference, vat_xi=xi
  )
  graphdef, params = nnx.split(VatMLP(rngs=nnx.Rngs(3)))
  rng = np.random.default_rng(0)
  images = lambda n: (rng.random((n, 28, 28, 1)) ** 3 * 255).astype(np.uint8)  # mostly dark
  labelled = {"image": images(40), "label": rng.integers(0, 10, 40).astype(np.int32)}
  batch = {"image": images(64)}
  key = jax.random.key(7)
  loss_fn = vat.loss_function(cfg, graphdef)
  step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  (loss, _), grads = step(params, batch, labelled, key)

  vat_key = jax.random.split(key, 3)[1]  # the loss's draw of the initial direction
  d0 = np.asarray(jax.random.normal(vat_key, batch["image"].shape), np.float64)
  model = nnx.merge(graphdef, params)
  with jax.enable_x64(True):
    as64 = lambda a: jnp.asarray(np.asarray(a), jnp.float64)
    layers = [
      (as64(dense.kernel[...]), as64(scale[...]), as64(shift[...]))
      for dense, scale, shift in zip(model.dense, model.scale, model.shift)
    ]
    args = (
      as64(labelled["image"]) / 255.0,
      jnp.asarray(labelled["label"]),
      as64(batch["image"]) / 255.0,
      jnp.asarray(d0),
      xi,
      cfg.vat_eps,
    )
    reference = jax.jit(jax.value_and_grad(_reference_semi_supervised_loss), static_argnums=(5, 6))
    ref_loss, ref_grads = reference(layers, *args)
    ref_loss, ref_grads = float(ref_loss), jax.tree.map(np.asarray, ref_grads)
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
  for i in range(len(layers)):
    for ours, ref in (
      (grads["dense"][i]["kernel"][...], ref_grads[i][0]),
      (grads["scale"][i][...], ref_grads[i][1]),
      (grads["shift"][i][...], ref_grads[i][2]),
    ):
      np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())

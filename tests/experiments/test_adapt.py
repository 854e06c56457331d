"""Experiment 3 (domain adaptation): schedules, gradient reversal in the network, smoke runs."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from gapmmd_jax import cli
from gapmmd_jax.experiments import adapt
from gapmmd_jax.models import DomainAdaptationNet


@pytest.mark.parametrize(
  "p, mu, lam",
  [
    (0.0, 0.01, 0.0),
    (0.5, 0.01 / 6**0.75, 2 / (1 + math.exp(-5)) - 1),
    (1.0, 0.01 / 11**0.75, 2 / (1 + math.exp(-10)) - 1),
  ],
)
def test_schedules(p, mu, lam):
  learning_rate, reversal = adapt.schedules(p)
  assert float(learning_rate) == pytest.approx(mu, rel=1e-6)
  assert float(reversal) == pytest.approx(lam, rel=1e-6, abs=1e-7)


def test_domain_gradient_reaches_the_features_reversed():
  model = DomainAdaptationNet(rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  images = jax.random.normal(jax.random.key(1), (8, 28, 28, 3))
  domains = jnp.array([0, 1] * 4)

  def domain_loss(params, reverse):
    m = nnx.merge(graphdef, params)
    features = m.features(images)
    logits = m.domain(features, 0.7) if reverse else m.domain_out(nnx.relu(m.domain1(features)))
    return optax.softmax_cross_entropy_with_integer_labels(logits, domains).mean()

  with_grl = jax.grad(domain_loss)(params, True)
  without = jax.grad(domain_loss)(params, False)
  for name in ("conv1", "conv2"):  # the feature extractor: reversed and scaled by lambda
    np.testing.assert_allclose(
      with_grl[name]["kernel"][...], -0.7 * without[name]["kernel"][...], rtol=1e-4, atol=1e-7
    )
    assert np.abs(without[name]["kernel"][...]).max() > 0
  for name in ("domain1", "domain_out"):  # the domain head itself: unchanged
    np.testing.assert_allclose(
      with_grl[name]["kernel"][...], without[name]["kernel"][...], rtol=1e-5
    )


def test_every_method_runs_and_the_table_is_written(mnist_dir, bsds_dir, tmp_path):
  assert (
    cli.main(
      [
        "adapt",
        "--variant",
        "quick",
        "--compare",
        "--data-dir",
        str(mnist_dir),
        "--bsds-dir",
        str(bsds_dir),
        "--max-train-examples",
        "512",
        "--max-eval-examples",
        "200",
        "--out-dir",
        str(tmp_path),
        "--run-name",
        "cmp",
        "--log-every",
        "2",
        "--no-progress",
      ]
    )
    == 0
  )
  root = tmp_path / "cmp"
  table = json.loads((root / "table.json").read_text())
  assert list(table["methods"]) == ["source-only", "ddc", "dan", "mmd", "dann"]
  assert "| dann |" in (root / "table.md").read_text()
  assert 0 <= table["methods"]["mmd"]["validation_accuracy"]["mean"] <= 1
  expected = {
    "source-only": set(),
    "ddc": {"mmd"},
    "dan": {"mmd"},
    "mmd": {"mmd"},
    "dann": {"domain_loss", "domain_accuracy"},
  }
  for method, extra in expected.items():
    for name in ("summary.json", "curves.png", "samples.png", "README.txt", "tsne.png"):
      assert (root / method / name).is_file(), (method, name)
    rows = [json.loads(line) for line in (root / method / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert {"label_loss", "learning_rate", "lambda", "source_accuracy"} | extra <= set(train[-1])
    assert train[0]["learning_rate"] > train[-1]["learning_rate"]
    if method == "mmd":  # constant weight after a source-only warm-up of 20% of the steps
      assert train[0]["lambda"] == 0.0 and train[-1]["lambda"] == 1.0
    else:
      assert train[0]["lambda"] < train[-1]["lambda"]
    assert all(np.isfinite(r["loss"]) for r in train)
    evaluation = [r for r in rows if r["split"] == "eval"][-1]
    assert {"source_accuracy", "target_accuracy", "validation_accuracy"} <= set(evaluation)


def test_dan_kernel_weights_are_learned_between_steps(mnist_dir, bsds_dir, tmp_path):
  cfg = adapt.VARIANTS["quick"]
  cfg = type(cfg)(
    **{
      **cfg.__dict__,
      "method": "dan",
      "data_dir": str(mnist_dir),
      "bsds_dir": str(bsds_dir),
      "max_train_examples": 512,
      "max_eval_examples": 200,
      "dan_update_every": 4,
      "out_dir": str(tmp_path),
      "run_name": "dan",
      "progress": False,
      "mmd_layers": ("hidden2", "features"),
    }
  )
  result = adapt.run(cfg, "quick")
  weights = result.state["state"]["kernel_weights"]  # [seeds, layers, kernels]
  assert weights.shape == (1, 2, len(adapt.DAN_MULTIPLIERS))
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
  assert np.all(weights >= 0) and not np.allclose(weights, 1 / len(adapt.DAN_MULTIPLIERS))


def test_bad_options(capsys):
  assert cli.main(["adapt", "--momentum", "1.5"]) == 2
  assert "momentum" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cli.main(["adapt", "--method", "coral"])
  assert "invalid choice: 'coral'" in capsys.readouterr().err
  assert cli.main(["adapt", "--method", "ddc", "--mmd-layers", "features", "fc7"]) == 2
  assert "mmd_layers must be distinct names" in capsys.readouterr().err


def test_adapted_layers():
  assert adapt.Config(method="ddc").adapted_layers == ("hidden2",)
  assert adapt.Config(method="ddc").weight == 0.25
  assert adapt.Config(method="dann", adaptation_weight=0.5).weight == 0.5
  assert adapt.Config(method="dan").adapted_layers == ("hidden1", "hidden2", "logits")
  mmd = adapt.Config(method="mmd")
  assert (mmd.adapted_layers, mmd.schedule, mmd.start) == (("hidden1",), "constant", 0.2)
  assert adapt.Config(method="dann").schedule == "ramp" and adapt.Config(method="dann").start == 0
  assert adapt.Config(method="dann").adapted_layers == ()
  chosen = adapt.Config(method="dan", mmd_layers=("logits", "features"))
  assert chosen.adapted_layers == ("features", "logits")  # network order


def test_adaptation_coefficient():
  progress = jnp.asarray([0.0, 0.1, 0.2, 0.5, 1.0])
  np.testing.assert_allclose(
    adapt.adaptation_coefficient(progress, "constant", 0.2), [0, 0, 1, 1, 1]
  )
  np.testing.assert_allclose(
    adapt.adaptation_coefficient(progress, "ramp", 0.0), adapt.schedules(progress)[1], rtol=1e-6
  )
  np.testing.assert_allclose(
    adapt.adaptation_coefficient(progress, "ramp", 0.3),
    [0, 0, 0, *adapt.schedules(progress)[1][3:]],
    rtol=1e-6,
  )


def test_validation_split_is_deterministic_and_held_out_of_the_test_set(mnist_dir, bsds_dir):
  cfg = adapt.Config(
    data_dir=str(mnist_dir),
    bsds_dir=str(bsds_dir),
    max_train_examples=600,
    max_eval_examples=300,
    validation_size=100,
    validation_seed=3,
  )
  train, evaluation, _ = adapt.load_data(cfg)
  again = adapt.load_data(cfg)[1]
  for key in ("validation", "validation_label", "validation_weight"):
    np.testing.assert_array_equal(evaluation[key], again[key])
  chosen = adapt.validation_indices(600, 100, 3)
  assert len(np.unique(chosen)) == 100 and chosen.max() < 600
  assert not np.array_equal(chosen, adapt.validation_indices(600, 100, 4))
  # Validation rows are MNIST-M *training* images: the same pixels as training targets ...
  train_target = {row.tobytes() for row in train["target"]}
  assert all(row.tobytes() in train_target for row in evaluation["validation"][:100])
  # ... never test images, and weighted so that the row mean is the mean over the 100.
  test_target = {row.tobytes() for row in evaluation["target"]}
  assert not any(row.tobytes() in test_target for row in evaluation["validation"][:100])
  np.testing.assert_allclose(evaluation["validation_weight"].sum(), 300.0)
  assert np.all(evaluation["validation_weight"][100:] == 0)
  with pytest.raises(ValueError, match="validation_size"):
    adapt.load_data(dataclasses.replace(cfg, validation_size=400))

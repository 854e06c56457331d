"""Experiment 4c (MINE clustering): the linear probe, and a smoke run."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gapmmd_jax import cli
from gapmmd_jax.experiments import mine_cluster
from gapmmd_jax.models import MineEncoder


def test_linear_probe_separates_separable_latents():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(10, 5)) * 4.0
  y = rng.integers(0, 10, 3000)
  z = (centres[y] + rng.normal(size=(3000, 5))).astype(np.float32)
  sets = {"test": (z[2000:2500], y[2000:2500]), "validation": (z[2500:], y[2500:])}
  accuracy = mine_cluster.linear_probe(
    jax.random.key(0), z[:2000], y[:2000], sets, epochs=20, learning_rate=1e-2
  )
  assert accuracy["test"] > 0.95 and accuracy["validation"] > 0.95
  shuffled = mine_cluster.linear_probe(
    jax.random.key(0), z[:2000], rng.permutation(y[:2000]), sets, epochs=20, learning_rate=1e-2
  )
  assert max(shuffled.values()) < 0.3  # nothing to learn from shuffled labels


def test_the_probe_leaves_its_validation_images_out():
  cfg = mine_cluster.Config(probe_validation_size=300, probe_validation_seed=4)
  fit_rows, held_out = mine_cluster.probe_rows(cfg, 1000)
  assert len(held_out) == 300 and len(fit_rows) == 700
  assert not set(fit_rows) & set(held_out)
  assert not np.array_equal(
    held_out, mine_cluster.probe_rows(dataclasses.replace(cfg, probe_validation_seed=5), 1000)[1]
  )
  with pytest.raises(ValueError, match="leaves none of the 300 training images"):
    mine_cluster.probe_rows(cfg, 300)
  with pytest.raises(ValueError, match="exceeds the 200 training images"):
    mine_cluster.probe_rows(cfg, 200)
  with pytest.raises(ValueError, match="probe_validation_size must be >= 0"):
    mine_cluster.Config(probe_validation_size=-1)


def test_validation_chooses_the_reported_evaluation():
  rows = [
    {
      "step": 10,
      "seed": 0,
      "split": "eval",
      "probe_validation_accuracy": 0.8,
      "probe_accuracy": 0.7,
    },
    {
      "step": 20,
      "seed": 0,
      "split": "eval",
      "probe_validation_accuracy": 0.9,
      "probe_accuracy": 0.6,
    },
    {
      "step": 20,
      "seed": 1,
      "split": "eval",
      "probe_validation_accuracy": 0.99,
      "probe_accuracy": 0.5,
    },
    {"step": 25, "seed": 0, "split": "eval", "probe_accuracy": 0.99},  # no validation: not a choice
    {
      "step": 30,
      "seed": 0,
      "split": "eval",
      "probe_validation_accuracy": 0.9,
      "probe_accuracy": 0.8,
    },
  ]
  # The highest validation accuracy, the earliest of ties; the test accuracy plays no part.
  assert mine_cluster.validation_choice(rows, 0, (30, 0.9, 0.8)) == (20, 0.6)
  assert mine_cluster.validation_choice(rows, 0, (40, 0.95, 0.4)) == (40, 0.4)  # the final one
  assert mine_cluster.validation_choice([], 1, (40, 0.5, 0.4)) == (40, 0.4)


def _probe_step_reference(params, z, y, learning_rate=1e-3, eps=1e-7):
  """Float64 NumPy: the probe after one Adam step on the mean cross-entropy of ``(z, y)``
  (from zero moments, Adam's first update is ``-lr g / (|g| + eps)``)."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  hidden = z @ p["w1"] + p["b1"]
  logits = hidden @ p["w2"] + p["b2"]
  prob = np.exp(logits - logits.max(1, keepdims=True))
  prob /= prob.sum(1, keepdims=True)
  d_logits = (prob - np.eye(10)[y]) / len(z)
  d_hidden = d_logits @ p["w2"].T
  grads = {
    "w1": z.T @ d_hidden,
    "b1": d_hidden.sum(0),
    "w2": hidden.T @ d_logits,
    "b2": d_logits.sum(0),
  }
  return {k: p[k] - learning_rate * g / (np.abs(g) + eps) for k, g in grads.items()}, grads


def test_keras_probe_round_is_keras_fit_on_a_partial_batch_and_keeps_the_best():
  """100 latents, batch 128: one epoch is one partial batch (the padding rows must not count),
  against a float64 reference of the step; the next round warm-starts from it."""
  rng = np.random.default_rng(0)
  z = rng.normal(size=(100, 4)).astype(np.float32)
  y = rng.integers(0, 10, 100)
  probe = mine_cluster.keras_probe_init(jax.random.key(0), 4)
  after = mine_cluster.keras_probe_round(probe, z, y, jax.random.key(1), epochs=1)
  expected, grads = _probe_step_reference(probe["params"], z.astype(np.float64), y)
  for name, want in expected.items():
    clear = np.abs(grads[name]) > 1e-4  # where float32 gradients keep the update's sign
    np.testing.assert_allclose(np.asarray(after["params"][name])[clear], want[clear], atol=1e-6)
  logits = mine_cluster._probe_logits(after["params"], jnp.asarray(z))
  assert float(after["last"]) == pytest.approx(float(np.mean(np.argmax(logits, -1) == y)))
  assert float(after["best"]) == float(after["last"])
  lower = {**after, "best": jnp.asarray(2.0)}  # the best so far is kept
  again = mine_cluster.keras_probe_round(lower, z, y, jax.random.key(2), epochs=1)
  assert float(again["best"]) == 2.0 and float(again["last"]) <= 1.0
  assert int(again["opt_state"][0].count) == 2  # Adam's steps go on across rounds


def test_keras_initialisation_and_batchnorm_constants():
  """``init="keras"``: truncated He normal convolutions (std sqrt(2 / fan_in), nothing beyond
  two truncated-normal stds), Glorot uniform dense layers (each half of the statistics network
  as its own [L, 1024] layer), a second zero bias; BatchNorm 0.99 / 1e-3. Std estimates from
  >= 2,560 weights are within 10% far below a 1e-6 false-alarm rate."""
  net = MineEncoder(init="keras", momentum=0.99, epsilon=1e-3, rngs=nnx.Rngs(0))
  for conv, norm in zip(net.backbone.convs, net.backbone.norms):
    kernel = np.asarray(conv.kernel[...])
    std = np.sqrt(2.0 / np.prod(kernel.shape[:3]))
    assert np.std(kernel) == pytest.approx(std, rel=0.1)
    assert np.abs(kernel).max() <= 2 * std / 0.8796256610342398 + 1e-6
    assert (norm.momentum, norm.epsilon) == (0.99, 1e-3)
  latent = np.asarray(net.latent.kernel[...])
  bound = np.sqrt(6.0 / sum(latent.shape))
  assert np.abs(latent).max() <= bound and np.abs(latent).max() > 0.95 * bound
  hidden = np.asarray(net.statistic_hidden.kernel[...])  # [20, 1024]
  half_bound = np.sqrt(6.0 / (10 + 1024))
  for half in (hidden[:10], hidden[10:]):
    assert half_bound * 0.95 < np.abs(half).max() <= half_bound
  assert not np.array_equal(hidden[:10], hidden[10:])
  np.testing.assert_array_equal(net.statistic_bias_other[...], 0.0)
  # The second bias enters T like the first: equal gradients.
  z = jnp.asarray(np.random.default_rng(0).normal(size=(8, 10)), jnp.float32)

  grads = nnx.grad(lambda m: m.statistic(z, z[::-1]).sum())(net)
  np.testing.assert_allclose(
    grads["statistic_hidden"]["bias"][...], grads["statistic_bias_other"][...]
  )
  assert MineEncoder(rngs=nnx.Rngs(0)).statistic_bias_other is None  # flax: one bias


@pytest.fixture(scope="module")
def quick_run(mnist_dir, tmp_path_factory):
  """A quick run with the Keras recipe's choices: its run directory."""
  out = tmp_path_factory.mktemp("mine-cluster")
  flags = ["--batchnorm", "separate", "--transforms", "keras-book", "--init", "keras"]
  flags += ["--eval-every", "6"]  # 16 steps: evaluations at 6, 12 and the end
  flags += ["--bn-momentum", "0.99", "--bn-epsilon", "1e-3", "--keras-probe", "--probe-every", "2"]
  argv = ["mine-cluster", "--variant", "quick", "--data-dir", str(mnist_dir)]
  argv += ["--out-dir", str(out), "--run-name", "q", "--no-progress", *flags]
  assert cli.main(argv) == 0
  return out / "q"


def test_quick_run(quick_run):
  """The Keras recipe's choices on the quick sizes: separate BatchNorm passes, the book's
  transforms, initialisation and BatchNorm constants, its probe protocol at every scheduled
  evaluation (not at the end's, off the schedule) and ours at every second."""
  config = json.loads((quick_run / "config.json").read_text())
  assert (config["batchnorm"], config["transforms"], config["init"]) == (
    "separate",
    "keras-book",
    "keras",
  )
  assert (config["bn_momentum"], config["bn_epsilon"], config["keras_probe"]) == (0.99, 1e-3, True)
  summary = json.loads((quick_run / "summary.json").read_text())
  for name in (
    "probe_accuracy",
    "probe_validation_accuracy",
    "probe_accuracy_selected",
    "probe_trained_on_test_accuracy",
    "keras_protocol_accuracy",
  ):
    assert 0.1 <= summary[name]["mean"] <= 1.0
  rows = [json.loads(line) for line in (quick_run / "metrics.jsonl").read_text().splitlines()]
  assert all(np.isfinite(r["mi_bound"]) for r in rows)
  assert {r["split"] for r in rows} == {"train", "eval"}
  keras = [(r["step"], r["keras_probe_best"]) for r in rows if "keras_probe_best" in r]
  assert [step for step, _ in keras] == [6, 12]  # not at 16, off the schedule
  best = [value for _, value in keras]
  assert best == sorted(best)  # the best never falls
  assert summary["keras_protocol_accuracy"]["mean"] == best[-1]
  # Our probe at every 2nd evaluation (at 12, and at 16, also the 2nd by 16 // 6); the final
  # probe is that evaluation's, not trained again.
  curve = [(r["step"], r["probe_accuracy"]) for r in rows if "probe_accuracy" in r]
  assert [step for step, _ in curve] == [12, 16]
  assert summary["probe_accuracy"]["mean"] == pytest.approx(curve[-1][1])
  # The reported evaluation is the one with the higher validation accuracy (the earlier of ties).
  chosen = max(
    (r for r in rows if "probe_validation_accuracy" in r),
    key=lambda r: (r["probe_validation_accuracy"], -r["step"]),
  )
  assert summary["probe_selected_step"]["per_seed"] == [chosen["step"]]
  assert summary["probe_accuracy_selected"]["mean"] == pytest.approx(chosen["probe_accuracy"])
  assert (quick_run / "accuracy_vs_pairs.png").stat().st_size > 0


def test_probe_command_reproduces_the_runs_probe(quick_run, mnist_dir, capsys):
  """``gapmmd probe`` on the run's checkpoint: with the run's settings its linear probe is the
  run's last evaluation exactly; other probes on the same rows; probes.json written."""
  argv = ["probe", str(quick_run), "--data-dir", str(mnist_dir), "--epochs", "3", "1"]
  assert cli.main([*argv, "--logistic-c", "1", "--neighbours", "5"]) == 0
  report = json.loads((quick_run / "probes.json").read_text())
  summary = json.loads((quick_run / "summary.json").read_text())
  assert report["step"] == summary["steps"] and report["probes"][0]["seed"] == 0
  assert (report["fit_rows"], report["validation_rows"], report["test_rows"]) == (824, 200, 500)
  probes = {r["probe"]: r for r in report["probes"]}
  assert list(probes) == [
    "linear probe, 3 epochs, Adam 0.001",
    "linear probe, 1 epoch, Adam 0.001",
    "logistic regression, C = 1",
    "5 nearest neighbours",
  ]
  own = probes["linear probe, 3 epochs, Adam 0.001"]
  assert own["test"] == pytest.approx(summary["probe_accuracy"]["mean"], abs=1e-6)
  assert own["validation"] == pytest.approx(summary["probe_validation_accuracy"]["mean"], abs=1e-6)
  assert all(0.1 <= r[s] <= 1.0 for r in report["probes"] for s in ("validation", "test"))
  assert "5 nearest neighbours" in capsys.readouterr().out


@pytest.mark.parametrize(
  ("argv_tail", "message"),
  [
    (["--neighbours", "0"], "--neighbours must be >= 1"),
    (["--neighbours", "900"], "--neighbours must be <= the 824 latents"),
    (["--learning-rates", "-1"], "--learning-rates must be finite and > 0"),
    (["--logistic-c", "nan"], "--logistic-c must be finite and > 0"),
  ],
)
def test_probe_command_rejects_bad_options(quick_run, mnist_dir, capsys, argv_tail, message):
  argv = ["probe", str(quick_run), "--data-dir", str(mnist_dir), "--epochs", "1", *argv_tail]
  assert cli.main(argv) == 2
  assert message in capsys.readouterr().err


def test_probe_command_needs_a_mine_cluster_checkpoint(tmp_path, capsys):
  assert cli.main(["probe", str(tmp_path)]) == 2
  assert "is not a run directory" in capsys.readouterr().err
  (tmp_path / "config.json").write_text(json.dumps({"experiment": "iic"}))
  assert cli.main(["probe", str(tmp_path)]) == 2
  assert "is a run of 'iic', not of 'mine-cluster'" in capsys.readouterr().err
  (tmp_path / "config.json").write_text(json.dumps({"experiment": "mine-cluster"}))
  assert cli.main(["probe", str(tmp_path)]) == 2
  assert "has no checkpoint yet" in capsys.readouterr().err


def test_keras_variant_is_the_books_recipe():
  cfg = mine_cluster.VARIANTS["keras"]
  assert (cfg.batch_size, cfg.epochs, cfg.eval_every) == (1024, 200.0, 60000 // 1024)
  assert (cfg.transforms, cfg.init, cfg.bn_momentum, cfg.bn_epsilon) == (
    "keras-book",
    "keras",
    0.99,
    1e-3,
  )
  assert cfg.batchnorm == "separate" and cfg.keras_probe and cfg.probe_every == 10
  with pytest.raises(ValueError, match="probe_every and probe_validation_size must be >= 0"):
    mine_cluster.Config(probe_every=-1)
  default = mine_cluster.VARIANTS["default"]
  assert (default.transforms, default.init, default.keras_probe) == ("keras", "flax", False)

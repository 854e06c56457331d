"""Experiment 4a (IIC): matched accuracy, a smoke run whose loss decreases."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gapmmd_jax import cli, data
from gapmmd_jax.experiments import iic
from gapmmd_jax.losses import iic_loss
from gapmmd_jax.metrics import cluster_accuracy, matched_accuracy, matched_table
from gapmmd_jax.models import IICNet


def test_matched_accuracy_equals_cluster_accuracy():
  rng = np.random.default_rng(0)
  labels, clusters = rng.integers(0, 10, 500), rng.integers(0, 12, 500)
  counts = np.zeros((12, 10))
  np.add.at(counts, (clusters, labels), 1)
  assert matched_accuracy(counts) == pytest.approx(cluster_accuracy(labels, clusters))
  assert matched_accuracy(counts / 500) == pytest.approx(cluster_accuracy(labels, clusters))
  with pytest.raises(ValueError, match="non-negative"):
    matched_accuracy(-counts)


@pytest.mark.parametrize("seed", range(5))
def test_matched_table_puts_the_matching_on_the_diagonal(seed):
  """Clusters permuted, two digits merged and one split: the reordered table's diagonal
  sums to the matched count, its rows are the original rows, and the merge shows."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 10, 2000)
  clusters = rng.permutation(12)[np.where(labels == 5, 3, labels)]  # 3 and 5 merged
  split = (labels == 2) & (rng.random(2000) < 0.4)
  clusters = np.where(split, rng.permutation(12)[10], clusters)  # part of 2 elsewhere
  clusters = np.where(rng.random(2000) < 0.05, rng.integers(0, 12, 2000), clusters)  # noise
  counts = np.zeros((12, 10))
  np.add.at(counts, (clusters, labels), 1)
  table = matched_table(counts)
  assert np.trace(table) == pytest.approx(matched_accuracy(counts) * 2000)
  assert sorted(map(tuple, table)) == sorted(map(tuple, counts))
  # the cluster holding 3s is matched to 3 or to 5, and holds most of the other digit too
  merged = 3 if table[3, 3] >= table[5, 5] else 5
  assert table[merged, 8 - merged] > 0.8 * (labels == 8 - merged).sum()
  with pytest.raises(ValueError, match="at least as many clusters"):
    matched_table(counts.T)


def test_quick_run_learns_and_reports_heads(mnist_dir, tmp_path):
  assert (
    cli.main(
      [
        "iic",
        "--variant",
        "quick",
        "--data-dir",
        str(mnist_dir),
        "--out-dir",
        str(tmp_path),
        "--run-name",
        "q",
        "--no-progress",
        "--epochs",
        "2",
      ]
    )
    == 0
  )
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
  # The lowest-loss head's table holds every test image, rows in matched order.
  table = np.asarray(heads["lowest_loss_head_table"])
  assert table.shape == (10, 10) and table.sum() == 500
  assert np.trace(table) / 500 == pytest.approx(heads["lowest_loss_head_accuracy"], abs=1e-6)
  # And every head's, each matching its logged accuracy.
  per_head = np.asarray(heads["head_tables"])
  assert per_head.shape == (2, 10, 10) and (per_head.sum((1, 2)) == 500).all()
  np.testing.assert_allclose(
    np.trace(per_head, axis1=1, axis2=2) / 500, heads["head_accuracies"], atol=1e-6
  )
  assert per_head[heads["lowest_loss_head"]].tolist() == heads["lowest_loss_head_table"]
  assert (run / "contingency.png").is_file() and (run / "accuracy_vs_pairs.png").is_file()
  assert "contingency.png: per seed" in (run / "README.txt").read_text()


def _tiny_net():
  return IICNet(num_heads=2, overcluster_heads=0, rngs=nnx.Rngs(0))


def test_repeat_trick_equals_explicit_repeats():
  """x through the network once, its prediction repeated, gives the loss and the parameter
  gradient of feeding ``repeats`` explicit copies (separate BatchNorm passes: a repeated batch
  has the same statistics)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((6, 24, 24, 1)), jnp.float32)
  x_bar = jnp.asarray(rng.random((18, 24, 24, 1)), jnp.float32)
  graphdef, params, stats = nnx.split(_tiny_net(), nnx.Param, nnx.BatchStat)

  def loss(params, explicit):
    model = nnx.merge(graphdef, params, stats, copy=True)
    logits_bar, _ = model(x_bar, train=True)
    if explicit:
      logits_x, _ = model(jnp.tile(x, (3, 1, 1, 1)), train=True)
      return jnp.sum(jax.vmap(iic_loss)(jax.nn.softmax(logits_x), jax.nn.softmax(logits_bar)))
    logits_x, _ = model(x, train=True)
    return jnp.sum(iic.repeated_pair_losses(logits_x, logits_bar, 3))

  (value, grads), (value_ref, grads_ref) = (
    jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, e) for e in (False, True)
  )
  np.testing.assert_allclose(value, value_ref, rtol=1e-4, atol=1e-6)  # MI ~ 0 at init
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
    # float32 rounding of BatchNorm over 6 vs 18 rows; a wrong repeat would be O(1) off.
    assert np.linalg.norm(a - b) <= 1e-3 * np.linalg.norm(b), (a.shape, np.abs(a - b).max())


def test_paper_step_gradient_equals_a_float64_network_of_stock_layers(mnist_dir, monkeypatch):
  """The paper variant's loss and gradient under jit, through our max-pool and the 5x5-on-3x3
  matmul, against the same parameters in float64 through ``jax.lax``'s convolution and
  ``nnx.max_pool`` on the same real image pairs: ~1e-5 relative per array here; on seed 0's
  7,023-step checkpoint (140 images x 5, 2026-11-30) at most 1.6e-4 (1.7e-5 with ``--xla
  ynn``). The max-pool gradient that broke under jit was ~45% off."""
  cfg = dataclasses.replace(iic.VARIANTS["paper"], repeats=2)
  images, _ = data.load_mnist("train", data_dir=mnist_dir)
  x, x_bar = iic.pair_inputs(cfg, jax.random.key(0), jnp.asarray(images[:4, ..., None]))
  net = IICNet(num_heads=5, overcluster_heads=0, kernel_size=5, init="official", rngs=nnx.Rngs(0))
  nets = [net, nnx.clone(net)]
  for conv, norm in zip(nets[1].backbone.convs, nets[1].backbone.norms):
    conv.conv_general_dilated, conv.dtype, norm.dtype = jax.lax.conv_general_dilated, None, None
  (graphdef, params, stats), (graphdef64, _, _) = (
    nnx.split(net, nnx.Param, nnx.BatchStat) for net in nets
  )
  for head in params["heads"].values():  # confident heads, as after training: MI well above 0
    head["kernel"] = head["kernel"] * 30.0

  def loss(params, stats, x, x_bar, graphdef):
    model = nnx.merge(graphdef, params, stats, copy=True)
    (logits_x, _), (logits_bar, _) = model(x, train=True), model(x_bar, train=True)
    return jnp.sum(iic.repeated_pair_losses(logits_x, logits_bar, cfg.repeats))

  value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=4)
  value, grads = value_and_grad(params, stats, x, x_bar, graphdef)
  stock_pool = lambda a: nnx.max_pool(a, (2, 2), strides=(2, 2))
  monkeypatch.setattr("gapmmd_jax.models._vgg.max_pool", stock_pool)
  with jax.enable_x64(True):
    as64 = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)
    value64, grads64 = value_and_grad(*as64((params, stats, x, x_bar)), graphdef64)
    assert all(g.dtype == jnp.float64 for g in jax.tree.leaves(grads64))
    assert value64 < -0.5
    np.testing.assert_allclose(value, value64, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads64)):
      error = np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b)
      assert error < 1e-4, (a.shape, error)


def test_bfloat16_convolutions_keep_float32_parameters_and_outputs():
  """``compute_dtype=bfloat16``: the same parameters (float32), float32 logits within bfloat16
  rounding of the float32 network's, and a parameter gradient pointing the same way: cosine
  0.987-1.0 per array on 2026-11-29 (0.75-0.91 in the first blocks before the max-pool's
  gradient was made exact under jit)."""
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.random((16, 24, 24, 1)), jnp.float32)
  nets = [
    IICNet(num_heads=2, overcluster_heads=0, compute_dtype=dtype, rngs=nnx.Rngs(0))
    for dtype in (jnp.float32, jnp.bfloat16)
  ]
  (graphdef32, params, stats), (graphdef16, params16, _) = (
    nnx.split(net, nnx.Param, nnx.BatchStat) for net in nets
  )
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params16)):
    assert b.dtype == jnp.float32
    np.testing.assert_array_equal(a, b)

  def loss(params, graphdef):
    logits, _ = nnx.merge(graphdef, params, stats, copy=True)(x, train=True)
    return jnp.sum(jax.nn.log_softmax(logits)[..., 0]), logits

  value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
  (_, logits32), grads32 = value_and_grad(params, graphdef32)
  (_, logits16), grads16 = value_and_grad(params, graphdef16)
  assert logits16.dtype == jnp.float32
  assert not np.array_equal(logits16, logits32)  # the convolutions did run in bfloat16
  scale = float(jnp.std(logits32))
  np.testing.assert_allclose(logits16, logits32, atol=0.05 * scale)  # bf16: 8 mantissa bits
  cosine = lambda a, b: a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
  flat16, flat32 = ([np.ravel(g) for g in jax.tree.leaves(t)] for t in (grads16, grads32))
  assert all(cosine(a, b) > 0.97 for a, b in zip(flat16, flat32))
  assert cosine(np.concatenate(flat16), np.concatenate(flat32)) > 0.999


def test_official_network_has_5x5_convolutions_and_the_official_initialisation():
  """``conv_size=5, init="official"`` (the paper variant): ClusterNet6c's 5x5 kernels, He normal
  convolutions (std sqrt(2 / fan_in)), heads N(0, 0.01) with zero biases. The std estimates
  from >= 1,600 weights are within 10% at far below a 1e-6 false-alarm rate (relative error
  of a normal std estimate ~ 1 / sqrt(2 N) <= 1.8%)."""
  cfg = iic.VARIANTS["paper"]
  assert (cfg.conv_size, cfg.init) == (5, "official")
  net = IICNet(num_heads=2, overcluster_heads=0, kernel_size=5, init="official", rngs=nnx.Rngs(0))
  for conv in net.backbone.convs:
    kernel = np.asarray(conv.kernel[...])
    assert kernel.shape[:2] == (5, 5)
    fan_in = kernel.shape[0] * kernel.shape[1] * kernel.shape[2]
    assert np.std(kernel) == pytest.approx(np.sqrt(2.0 / fan_in), rel=0.1)
  for head in net.heads:
    assert np.std(np.asarray(head.kernel[...])) == pytest.approx(0.01, rel=0.1)
    np.testing.assert_array_equal(head.bias[...], 0.0)
  logits, _ = net(jnp.zeros((2, 24, 24, 1)), train=True)
  assert logits.shape == (2, 2, 10)
  default = iic.VARIANTS["default"]
  assert (default.conv_size, default.init) == (3, "flax")
  # x is the centre crop half the time (the official centre_half), only with its transforms.
  assert (cfg.transforms, cfg.x_centre_probability, default.x_centre_probability) == (
    "official-torchvision",
    0.5,
    0.0,
  )
  with pytest.raises(ValueError, match="official transforms only"):
    iic.Config(x_centre_probability=0.5)
  with pytest.raises(ValueError, match=r"in \[0, 1\]"):
    iic.Config(transforms="official", x_centre_probability=2.0)
  with pytest.raises(ValueError, match="init must be one of"):
    IICNet(init="torch", rngs=nnx.Rngs(0))


def test_evaluation_batchnorm_statistics_as_configured():
  """Running averages: an image's prediction does not depend on its batch; batch statistics
  (the official evaluation): it does. The evaluation input is deterministic."""
  net = _tiny_net()
  rng = np.random.default_rng(1)
  batch = jnp.asarray(rng.random((8, 24, 24, 1)), jnp.float32)
  other = batch.at[1:].set(jnp.asarray(rng.random((7, 24, 24, 1)) * 3, jnp.float32))
  running = [net(b, train=False)[0][:, 0] for b in (batch, other)]
  np.testing.assert_allclose(running[0], running[1], rtol=1e-5)
  per_batch = [net(b, train=False, batch_statistics=True)[0][:, 0] for b in (batch, other)]
  assert not np.allclose(per_batch[0], per_batch[1], rtol=1e-3)
  cfg = iic.Config(transforms="official", eval_statistics="batch")
  images = jnp.asarray(rng.integers(0, 256, (4, 28, 28, 1)), jnp.uint8)
  np.testing.assert_array_equal(iic.eval_inputs(cfg, images), iic.eval_inputs(cfg, images))


def test_official_recipe_smoke_run(mnist_dir, tmp_path):
  """The paper variant's choices on the quick sizes: repeats, official transforms, separate
  BatchNorm passes, evaluation with batch statistics, no over-clustering heads, 5x5
  convolutions with the official initialisation."""
  assert (
    cli.main(
      [
        "iic",
        "--variant",
        "quick",
        "--data-dir",
        str(mnist_dir),
        "--out-dir",
        str(tmp_path),
        "--run-name",
        "p",
        "--no-progress",
        "--repeats",
        "3",
        "--transforms",
        "official-torchvision",
        "--batchnorm",
        "separate",
        "--eval-statistics",
        "batch",
        "--overcluster-heads",
        "0",
        "--batch-size",
        "32",
        "--conv-size",
        "5",
        "--init",
        "official",
        "--max-train-examples",
        "256",
      ]
    )
    == 0
  )
  config = json.loads((tmp_path / "p" / "config.json").read_text())
  assert (config["repeats"], config["transforms"], config["batchnorm"], config["conv_size"]) == (
    3,
    "official-torchvision",
    "separate",
    5,
  )
  rows = [json.loads(line) for line in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in rows if r["split"] == "train"]
  assert "overcluster_loss" not in train[-1] and np.isfinite(train[-1]["loss"])
  summary = json.loads((tmp_path / "p" / "summary.json").read_text())
  assert 0.1 < summary["heads"][0]["best_head_accuracy"] <= 1.0
  assert summary["pairs_seen"] == summary["steps"] * 32 * 3
  assert (tmp_path / "p" / "accuracy_vs_pairs.png").is_file()


def test_keras_book_transforms_and_initialisation_options():
  """``--transforms keras-book``: x the centre crop, x' the book's transform of every repeat;
  evaluation on centre crops. ``--init keras``: Glorot uniform heads, zero biases."""
  cfg = iic.Config(transforms="keras-book", repeats=2, init="keras")
  images = jnp.asarray(np.random.default_rng(2).integers(0, 256, (4, 28, 28, 1)), jnp.uint8)
  key = jax.random.key(3)
  x, x_bar = iic.pair_inputs(cfg, key, images)
  unit = images.astype(jnp.float32) / 255.0
  np.testing.assert_array_equal(x, data.centre_crop(unit, 24))
  np.testing.assert_array_equal(x_bar, data.keras_book_transform(key, jnp.tile(unit, (2, 1, 1, 1))))
  np.testing.assert_array_equal(iic.eval_inputs(cfg, images), x)
  net = IICNet(num_heads=1, overcluster_heads=0, init="keras", rngs=nnx.Rngs(0))
  kernel = np.asarray(net.heads[0].kernel[...])
  bound = np.sqrt(6.0 / sum(kernel.shape))
  assert 0.95 * bound < np.abs(kernel).max() <= bound
  np.testing.assert_array_equal(net.heads[0].bias[...], 0.0)


def test_training_images_with_the_test_split_as_the_official_run(mnist_dir):
  """``train_images="train+test"``: the 60,000 train images then the 10,000 test images, cut
  by ``max_train_examples``, no labels; evaluation stays on the test split."""
  train, _ = data.load_mnist("train", data_dir=mnist_dir)
  test, test_labels = data.load_mnist("test", data_dir=mnist_dir)
  cfg = iic.Config(data_dir=str(mnist_dir), train_images="train+test")
  images = iic.training_images(cfg)
  assert images.shape == (70_000, 28, 28, 1) and images.dtype == np.uint8
  np.testing.assert_array_equal(images[:60_000, ..., 0], train)
  np.testing.assert_array_equal(images[60_000:, ..., 0], test)
  cut = iic.training_images(dataclasses.replace(cfg, max_train_examples=60_500))
  np.testing.assert_array_equal(cut[60_000:, ..., 0], test[:500])
  assert iic.training_images(dataclasses.replace(cfg, train_images="train")).shape[0] == 60_000
  task = iic.build_task(dataclasses.replace(cfg, max_eval_examples=300))
  assert set(task.train_data) == {"image"} and len(task.train_data["image"]) == 70_000
  np.testing.assert_array_equal(task.eval_data["label"], test_labels[:300])
  # The paper-70k variant: the paper recipe on these images in their stored order, the
  # official run's 10.5M pairs.
  paper, paper_70k = iic.VARIANTS["paper"], iic.VARIANTS["paper-70k"]
  assert (paper_70k.train_images, paper_70k.shuffle, paper.shuffle) == ("train+test", False, True)
  assert paper_70k.epochs * 70_000 * paper_70k.repeats == paper.epochs * 60_000 * paper.repeats
  assert dataclasses.replace(paper_70k, train_images="train", shuffle=True, epochs=35.0) == paper


def test_torchvision_transforms_option_feeds_pillows_pipeline():
  """``--transforms official-torchvision``: x and x' at 8-bit levels from the Pillow-exact
  transforms (x the centre crop with probability 1 here, so the evaluation input)."""
  cfg = iic.Config(transforms="official-torchvision", x_centre_probability=1.0, repeats=3)
  images = jnp.asarray(np.random.default_rng(3).integers(0, 256, (4, 28, 28, 1)), jnp.uint8)
  x, x_bar = iic.pair_inputs(cfg, jax.random.key(0), images)
  assert x.shape == (4, 24, 24, 1) and x_bar.shape == (12, 24, 24, 1)
  np.testing.assert_array_equal(x, iic.eval_inputs(cfg, images))
  np.testing.assert_array_equal(x, data.pil_crop_resize(None, images))
  np.testing.assert_allclose(x_bar * 255, np.rint(x_bar * 255), atol=1e-4)
  assert not np.array_equal(x_bar[:4], x_bar[4:8])  # three different transforms per image

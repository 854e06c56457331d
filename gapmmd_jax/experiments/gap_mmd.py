"""Experiment 1: GAP-LeNet and the class gap, on MNIST or cluttered MNIST.

Trains GAP-LeNet (Adam, cross-entropy, optionally plus a class-gap MMD
regulariser on the GAP features) for every seed at once with the shared
harness, then on the test set: accuracy per seed, class activation maps, the
GAP features per class, the 10 x 10 class MMD matrix with permutation-test
p-values, and how the diagonal/off-diagonal gap depends on the sample size. ::

  gapmmd gap-mmd                    # default: full MNIST, 2 epochs, 1 seed
  gapmmd gap-mmd --variant quick    # smoke run on 2048 examples
  gapmmd gap-mmd --variant full     # reproduction: 40 epochs, 2-pixel shifts, seeds 0 1 2
  gapmmd gap-mmd --variant full-cluttered --mmd-reg 0.5
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gapmmd_jax import data, plotting
from gapmmd_jax.config import option
from gapmmd_jax.experiments._common import gradient_step, image_split, to_unit_float
from gapmmd_jax.losses import class_gap_loss, class_mmd_matrix, diagonal_separability, mmd_test
from gapmmd_jax.models import GapLeNet
from gapmmd_jax.train import Result, Task, TrainConfig, fit, num_steps

NAME = "gap-mmd"
NUM_CLASSES = 10
SWEEP_SIZES = (1, 2, 5, 10, 25, 50, 150)
SWEEP_REPEATS = 5

FILES = {
  "gap_features.npy": "GAP features of test images, [seeds, 10 classes, N, 64] float32, "
  "standardised per dimension over all classes of that seed",
  "class_mmd.npy": "class MMD^2 matrices [seeds, 10, 10]: row i = first half of class i, "
  "column j = second half of class j (biased, 5 kernels, mean bandwidth)",
  "class_mmd_pvalues.npy": "permutation-test p-values [seeds, 10, 10] (class i vs class j, "
  "diagonal: the two halves of class i)",
  "class_mmd.png": "the class MMD matrix and its p-values (first seed), annotated",
  "cam_grid.png": "class activation maps of the predicted class over test images (first seed)",
  "sample_size_sweep.png": "mean diagonal vs off-diagonal MMD^2 against samples per set",
}


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
  """GAP-LeNet training and class-gap analysis options."""

  dataset: Literal["mnist", "cluttered_mnist"] = option("mnist", "training and test data")
  learning_rate: float = option(3e-3, "peak Adam learning rate (cosine decay to 0 over the run)")
  clutter_seed: int = option(0, "seed of the cluttered-MNIST generator")
  mmd_reg: float = option(0.0, "weight of the class-gap MMD regulariser on GAP features")
  features_per_class: int = option(300, "test images per class for features and the MMD matrix")
  num_permutations: int = option(1000, "permutations per class-pair MMD test")
  cam_examples: int = option(16, "test images in the class activation map grid")
  max_shift: int = option(0, "augment training images by random shifts of up to N pixels")


VARIANTS = {
  "quick": Config(
    epochs=2.0,
    max_train_examples=2048,
    max_eval_examples=2000,
    batch_size=64,
    eval_every=32,
    log_every=8,
    checkpoint_every=32,
    features_per_class=40,
    num_permutations=200,
    cam_examples=8,
  ),
  "default": Config(epochs=2.0),
  "full": Config(epochs=40.0, max_shift=2, seeds=(0, 1, 2)),
  "full-cluttered": Config(dataset="cluttered_mnist", epochs=45.0, max_shift=4, seeds=(0, 1, 2)),
}
DEFAULT_VARIANT = "default"


def _load(cfg: Config, split: str) -> dict[str, np.ndarray]:
  if cfg.dataset == "mnist":
    return image_split(cfg, split)
  return image_split(cfg, split, data.load_cluttered_mnist, seed=cfg.clutter_seed)


def _graphdef(in_channels: int = 1):
  return nnx.graphdef(nnx.eval_shape(lambda: GapLeNet(in_channels, rngs=nnx.Rngs(0))))


def build_task(cfg: Config) -> Task:
  """The GAP-LeNet classification task of ``cfg``."""
  train_data, eval_data = _load(cfg, "train"), _load(cfg, "test")
  _, total_steps = num_steps(cfg, len(train_data["label"]))
  tx = optax.adam(optax.cosine_decay_schedule(cfg.learning_rate, total_steps))
  graphdef = _graphdef()

  def init(key):
    params = nnx.state(GapLeNet(rngs=nnx.Rngs(key)))
    return {"params": params, "opt_state": tx.init(params)}

  def loss_fn(params, batch, key):
    images = data.random_translate(key, batch["image"], cfg.max_shift)
    logits, features = nnx.merge(graphdef, params)(to_unit_float(images))
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    metrics = {
      "cross_entropy": cross_entropy,
      "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
    }
    loss = cross_entropy
    if cfg.mmd_reg:
      gap = class_gap_loss(features, batch["label"], num_classes=NUM_CLASSES)
      metrics["class_gap"] = gap
      loss = loss + cfg.mmd_reg * gap
    return loss, metrics

  def train_step(state, batch, key):
    state, loss, metrics, grads = gradient_step(tx, loss_fn, state, batch, key)
    return state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}

  def eval_step(state, batch):
    logits, _ = nnx.merge(graphdef, state["params"])(to_unit_float(batch["image"]))
    return {
      "accuracy": (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32),
      "loss": optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]),
    }

  return Task(
    name=NAME,
    init=init,
    train_step=train_step,
    eval_step=eval_step,
    train_data=train_data,
    eval_data=eval_data,
  )


def _per_class_indices(labels: np.ndarray, count: int) -> np.ndarray:
  """``[10, count]`` indices of the first ``count`` examples of each class."""
  members = [np.flatnonzero(labels == c) for c in range(NUM_CLASSES)]
  available = min(len(m) for m in members)
  if available < count:
    raise ValueError(
      f"features_per_class={count} but the smallest test class has only {available} examples."
    )
  return np.stack([m[:count] for m in members])


def _standardise(features: np.ndarray) -> np.ndarray:
  flat = features.reshape(-1, features.shape[-1])
  return (features - flat.mean(0)) / np.maximum(flat.std(0), 1e-6)


def _class_tests(key: jax.Array, features: np.ndarray, num_permutations: int) -> np.ndarray:
  """``[10, 10]`` p-values: class pairs on all samples, the diagonal on two halves."""
  pvalues = np.zeros((NUM_CLASSES, NUM_CLASSES))
  pairs = list(itertools.combinations(range(NUM_CLASSES), 2))
  keys = jax.random.split(key, len(pairs) + 1)
  test = jax.jit(jax.vmap(lambda k, x, y: mmd_test(k, x, y, num_draws=num_permutations).p_value))
  first, second = zip(*pairs)
  off = np.asarray(test(keys[:-1], features[list(first)], features[list(second)]))
  for (i, j), p in zip(pairs, off):
    pvalues[i, j] = pvalues[j, i] = p
  half = features.shape[1] // 2
  diag_keys = jax.random.split(keys[-1], NUM_CLASSES)
  pvalues[np.diag_indices(NUM_CLASSES)] = np.asarray(
    test(diag_keys, features[:, :half], features[:, half : 2 * half])
  )
  return pvalues


def _sample_size_sweep(features: np.ndarray, seed: int) -> dict[str, np.ndarray]:
  """Mean diagonal and off-diagonal class MMD^2 for sets of n samples, over random draws."""
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(NUM_CLASSES), features.shape[1])
  sizes = [n for n in SWEEP_SIZES if 2 * n <= features.shape[1]]
  off = ~np.eye(NUM_CLASSES, dtype=bool)
  diag, offdiag = np.zeros((len(sizes), SWEEP_REPEATS)), np.zeros((len(sizes), SWEEP_REPEATS))
  for r in range(SWEEP_REPEATS):
    shuffled = np.stack([f[rng.permutation(len(f))] for f in features])
    flat = shuffled.reshape(-1, features.shape[-1])
    for k, n in enumerate(sizes):
      m = np.asarray(
        class_mmd_matrix(flat, labels, num_classes=NUM_CLASSES, samples_per_class=2 * n)
      )
      diag[k, r], offdiag[k, r] = np.diag(m).mean(), m[off].mean()
  return {"sizes": np.asarray(sizes), "diagonal": diag, "off_diagonal": offdiag}


def analyse(result: Result, task: Task, cfg: Config) -> dict:
  """Features, class MMD matrices, tests, CAMs and the sweep; returns summary entries."""
  run = result.run_dir
  graphdef = _graphdef()
  images, labels = task.eval_data["image"], task.eval_data["label"]
  index = _per_class_indices(labels, cfg.features_per_class)
  chosen = images[index.reshape(-1)]

  @jax.jit
  def features_and_cams(params, batch):
    model = nnx.merge(graphdef, params)
    maps = model.feature_maps(to_unit_float(batch))
    logits = model.classifier(maps.mean(axis=(1, 2)))
    predicted = jnp.argmax(logits, -1)
    weights = model.classifier.kernel[...][:, predicted].T  # [B, 64]
    cams = jnp.einsum("bhwk,bk->bhw", maps, weights)
    cams = jax.image.resize(cams, (len(batch), *batch.shape[1:3]), "bilinear")
    return maps.mean(axis=(1, 2)), cams, predicted

  per_seed_params = [
    jax.tree.map(lambda a, s=s: a[s], result.state["state"]["params"])
    for s in range(len(cfg.seeds))
  ]
  all_features, matrices, pvalues, gap_stats = [], [], [], []
  for s, params in enumerate(per_seed_params):
    feats = np.concatenate(
      [
        np.asarray(features_and_cams(params, chunk)[0])
        for chunk in np.array_split(chosen, max(1, len(chosen) // 500))
      ]
    )
    feats = _standardise(feats.reshape(NUM_CLASSES, cfg.features_per_class, -1))
    flat_labels = np.repeat(np.arange(NUM_CLASSES), cfg.features_per_class)
    matrix = np.asarray(
      class_mmd_matrix(feats.reshape(-1, feats.shape[-1]), flat_labels, num_classes=NUM_CLASSES)
    )
    p = _class_tests(jax.random.key(cfg.seeds[s]), feats, cfg.num_permutations)
    off = ~np.eye(NUM_CLASSES, dtype=bool)
    gap_stats.append(
      {
        "seed": cfg.seeds[s],
        "every_row_diagonal_below_off_diagonal": bool(
          all(matrix[i, i] < matrix[i, off[i]].min() for i in range(NUM_CLASSES))
        ),
        **diagonal_separability(matrix),
        "mean_diagonal": float(np.diag(matrix).mean()),
        "mean_off_diagonal": float(matrix[off].mean()),
        "max_off_diagonal_p_value": float(p[off].max()),
        "min_diagonal_p_value": float(np.diag(p).min()),
      }
    )
    all_features.append(feats)
    matrices.append(matrix)
    pvalues.append(p)
  np.save(run.file("gap_features.npy"), np.stack(all_features).astype(np.float32))
  np.save(run.file("class_mmd.npy"), np.stack(matrices))
  np.save(run.file("class_mmd_pvalues.npy"), np.stack(pvalues))

  plotting.heatmaps(
    [matrices[0], pvalues[0]],
    [
      f"class MMD$^2$ (seed {cfg.seeds[0]}, {cfg.features_per_class // 2} vs "
      f"{cfg.features_per_class // 2} per cell)",
      f"permutation p-values ({cfg.num_permutations} permutations)",
    ],
    run.file("class_mmd.png"),
    fmt="{:.2g}",
    log_scale=[False, True],
  )
  cam_images = images[: cfg.cam_examples]
  _, cams, predicted = features_and_cams(per_seed_params[0], cam_images)
  plotting.image_grid(
    cam_images[..., 0],
    np.asarray(cams),
    [f"true {t} / pred {p}" for t, p in zip(labels[: cfg.cam_examples], np.asarray(predicted))],
    run.file("cam_grid.png"),
  )
  sweep = _sample_size_sweep(all_features[0], cfg.seeds[0])
  plotting.lines_with_bands(
    sweep["sizes"],
    {
      "same class (diagonal)": (sweep["diagonal"].mean(1), sweep["diagonal"].std(1)),
      "different classes": (sweep["off_diagonal"].mean(1), sweep["off_diagonal"].std(1)),
    },
    run.file("sample_size_sweep.png"),
    xlabel="samples per set",
    ylabel="mean MMD$^2$",
    title="1 vs 1 cannot tell classes apart; tens of samples can",
    log_x=True,
  )
  return {
    "class_gap": gap_stats,
    "sample_size_sweep": {
      "sizes": sweep["sizes"].tolist(),
      "diagonal_mean": sweep["diagonal"].mean(1).tolist(),
      "off_diagonal_mean": sweep["off_diagonal"].mean(1).tolist(),
    },
  }


def run(cfg: Config, variant: str = "custom") -> Result:
  """Trains, analyses and writes the run directory; returns the result."""
  task = build_task(cfg)
  result = fit(task, cfg, variant=variant)
  result.summary.update(analyse(result, task, cfg), dataset=cfg.dataset, mmd_reg=cfg.mmd_reg)
  result.run_dir.descriptions.update(FILES)
  result.run_dir.write_json("summary.json", result.summary)
  result.run_dir.write_readme(
    f"{NAME} ({cfg.dataset}, {variant}, mmd_reg={cfg.mmd_reg}), seeds {list(cfg.seeds)}"
  )
  accuracy = result.summary["final_eval"]["accuracy"]
  print(f"\n{NAME} ({cfg.dataset}, {variant}, mmd_reg={cfg.mmd_reg})")
  print("| seed | test accuracy | diag < off-diag in every row | max off-diag p |")
  print("| --- | --- | --- | --- |")
  for seed, value, gap in zip(cfg.seeds, accuracy["per_seed"], result.summary["class_gap"]):
    print(
      f"| {seed} | {100 * value:.2f}% | {gap['every_row_diagonal_below_off_diagonal']} | "
      f"{gap['max_off_diagonal_p_value']:.4f} |"
    )
  print(f"| mean +- std | {100 * accuracy['mean']:.2f} +- {100 * accuracy['std']:.2f}% | | |")
  print(f"run directory: {result.run_dir.path}")
  return result

"""Experiment 4a: IIC clustering of MNIST (no labels in training).

The VGG-style backbone with BatchNorm and several softmax heads is trained
with ``iic_loss`` on pairs ``(x, x')`` of each image, all made on device inside
the jitted step. Two recipes, each choice an option::

  keras     (the default) the Keras book's: x the 24x24 centre crop, x' a rotation
            up to 20 degrees or a 16/18/20-pixel crop resized to 24; one x' per
            image; x and x' in one forward pass; 5 heads of 10 clusters plus 5
            over-clustering heads of 50; Adam 1e-3; BatchNorm's running averages at
            evaluation.
  paper     the official MNIST run (Ji et al. 2019, model 685): x a 20-pixel crop
            resized to 24, the centre one half the time, else at a random position
            (``--x-centre-probability 0.5``; the centre one at evaluation), x' a
            rotation up to 25 degrees with probability 0.5, then a 16/20/24 crop
            resized to 24 and brightness/contrast jitter 0.4, computed as torchvision
            and Pillow do (``--transforms official-torchvision``; ``official`` draws
            the same as one bilinear resampling); 140 images x 5 transforms = 700
            pairs per step, x computed once and its prediction repeated
            (``--repeats 5``); x and x' in separate forward passes (``--batchnorm
            separate``); 5 heads of 10 clusters only; Adam 1e-4; evaluation with
            each batch's statistics (``--eval-statistics batch``); ClusterNet6c's
            5x5 convolutions and initialisation (``--conv-size 5 --init
            official``). The test images stay held out.
  paper-70k the same on the official run's data: all 70,000 images, the test
            images unlabelled (``--train-images train+test``), in their stored
            order every epoch (``--no-shuffle``); 30 epochs = 10.5M pairs.

Every evaluation matches each main head's clusters to the test labels
(Hungarian) and logs its accuracy; the summary reports per seed the best head
and the head with the lowest training loss (the paper's selection rule), whose
test images per (cluster, digit) go to ``contingency.png``: digits merged into one
cluster or split over two show there (every head's table is ``head_tables`` in
``summary.json``, rows in matched order). ::

  gapmmd iic                       # 1 seed, 10 epochs
  gapmmd iic --variant quick       # smoke run
  gapmmd iic --variant full        # seeds 0 1 2, 30 epochs (a GPU job)
  gapmmd iic --variant paper       # the official recipe, 35 epochs = 10.5M pairs (a GPU job)
  gapmmd iic --variant paper-70k   # and the official run's data (a GPU job)
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gapmmd_jax import data, plotting
from gapmmd_jax.config import option
from gapmmd_jax.experiments._common import (
  centre_crops,
  eval_curve,
  gradient_step,
  image_split,
  keras_transform,
  to_unit_float,
)
from gapmmd_jax.losses import iic_loss
from gapmmd_jax.metrics import matched_accuracy, matched_table
from gapmmd_jax.models import IICNet
from gapmmd_jax.train import Result, Task, TrainConfig, fit

NAME = "iic"
NUM_CLASSES = 10
INPUT_SIZE = 24
# The official MNIST run's best sub-head against the image pairs it had seen (repository
# xu-ji/IIC, training log of model 685; one logged epoch = 1.05M pairs).
OFFICIAL_CURVE = (
  (1.05e6, 2.1e6, 3.15e6, 6.3e6, 10.5e6, 31e6),
  (85.6, 89.9, 98.7, 99.0, 99.1, 99.2),
)
# Published curves of evaluation metrics, (examples seen, %, label), for `gapmmd curves`.
REFERENCE_CURVES = {
  "best_head_accuracy": (*OFFICIAL_CURVE, "official run (xu-ji/IIC, best sub-head)"),
}
FILES = {
  "accuracy_vs_pairs.png": "best sub-head's test accuracy against image pairs seen, beside "
  "the official run",
  "contingency.png": "per seed, the lowest-loss head's test images per (cluster, digit); row "
  "j the cluster matched to digit j",
}
OFFICIAL_CROP = 20  # the official recipe's x: a 20-pixel crop resized to INPUT_SIZE
LOSS_WINDOW = 0.1  # fraction of the last training log rows whose head losses are averaged


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
  """IIC options; ``batch_size`` counts images, each giving ``repeats`` pairs."""

  heads: int = option(5, "main heads (10 clusters each)")
  overcluster_heads: int = option(5, "over-clustering heads (50 clusters each); 0 for none")
  learning_rate: float = option(1e-3, "Adam learning rate")
  repeats: int = option(
    1,
    "transformed copies x' of each image per step; x goes through the "
    "network once and its prediction is repeated (the official run: 5)",
  )
  transforms: Literal["keras", "keras-book", "official", "official-torchvision"] = option(
    "keras",
    "pair transforms: keras (x the centre crop, x' a rotation of it or a crop), keras-book "
    "(the Keras book's generator exactly: x' the whole image rotated by an integer angle, "
    "or a crop centred half the time), official (x a 20-crop, at the centre with "
    "--x-centre-probability, else at random; x' a rotation with "
    "p = 0.5, a 16/20/24 crop and a brightness / contrast jitter; one bilinear resampling) "
    "or official-torchvision (the same, step by step as torchvision and Pillow compute it "
    "on 8-bit images: nearest-neighbour rotation, half-pixel resize, rounding, the "
    "jitter in random order); all resized to 24",
  )
  x_centre_probability: float = option(
    0.0,
    "official transforms: the probability that x is the centre 20-crop rather than one at "
    "a uniform position (the official run's centre_half: 0.5, the paper variant's)",
  )
  batchnorm: Literal["joint", "separate"] = option(
    "joint", "x and x' through one forward pass (shared batch statistics) or two"
  )
  compute_dtype: Literal["float32", "bfloat16"] = option(
    "float32",
    "dtype of the backbone's convolutions (inputs and weights; parameters, BatchNorm and "
    "the loss stay float32)",
  )
  eval_statistics: Literal["running", "batch"] = option(
    "running",
    "BatchNorm at evaluation: the running averages, or each evaluation batch's "
    "statistics (the official code)",
  )
  conv_size: Literal[3, 5] = option(
    3, "the backbone's square convolutions: 3 (the Keras book) or 5 (the official ClusterNet6c)"
  )
  init: Literal["flax", "official", "keras"] = option(
    "flax",
    "weight initialisation: flax's defaults (LeCun normal), the official code's (He normal "
    "convolutions, heads N(0, 0.01)) or the Keras book's (truncated He normal, Glorot "
    "uniform heads); zero biases",
  )
  bn_momentum: float = option(
    0.9, "BatchNorm's running-average momentum (flax and PyTorch: 0.9; Keras: 0.99)"
  )
  bn_epsilon: float = option(1e-5, "BatchNorm's epsilon (flax and PyTorch: 1e-5; Keras: 1e-3)")
  train_images: Literal["train", "train+test"] = option(
    "train",
    "the images trained on, without labels: the train split's 60,000, or those and the test "
    "split's 10,000 (the official MNIST run's protocol; the test accuracy is then of images "
    "seen in training, unlabelled)",
  )

  def __post_init__(self):
    super().__post_init__()
    if self.heads < 1 or self.overcluster_heads < 0 or self.repeats < 1:
      raise ValueError(
        f"need heads >= 1, overcluster_heads >= 0 and repeats >= 1, got "
        f"{self.heads}, {self.overcluster_heads} and {self.repeats}."
      )
    if self.learning_rate <= 0:
      raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}.")
    if not 0 <= self.x_centre_probability <= 1:
      raise ValueError(f"x_centre_probability must be in [0, 1], got {self.x_centre_probability}.")
    if self.x_centre_probability and not self.transforms.startswith("official"):
      raise ValueError(
        "x_centre_probability applies to the official transforms only (official, "
        "official-torchvision; the other transforms' x is always the centre crop), got "
        f"transforms={self.transforms!r}."
      )


# 35 epochs of 140 images x 5 transforms: 10.5M pairs, where the official run's best
# sub-head reached 99.1% (10 logged epochs of 1.05M pairs).
_PAPER = Config(
  epochs=35.0,
  batch_size=140,
  repeats=5,
  overcluster_heads=0,
  learning_rate=1e-4,
  transforms="official-torchvision",
  x_centre_probability=0.5,
  batchnorm="separate",
  eval_statistics="batch",
  conv_size=5,
  init="official",
  eval_every=500,
  log_every=50,
  checkpoint_every=500,
)
VARIANTS = {
  "quick": Config(
    epochs=1.0,
    batch_size=64,
    max_train_examples=1024,
    max_eval_examples=500,
    eval_every=8,
    log_every=4,
    checkpoint_every=8,
    heads=2,
    overcluster_heads=1,
  ),
  "default": Config(epochs=10.0, batch_size=256, eval_every=200, log_every=20),
  "full": Config(epochs=30.0, batch_size=256, seeds=(0, 1, 2), eval_every=500, log_every=20),
  "paper": _PAPER,
  # The official run's data too: all 70,000 images (the test images unlabelled, so the
  # test accuracy is transductive) in their stored order; 30 epochs = 10.5M pairs.
  "paper-70k": dataclasses.replace(_PAPER, train_images="train+test", shuffle=False, epochs=30.0),
}
DEFAULT_VARIANT = "default"


def _make_net(cfg: Config, key) -> IICNet:
  return IICNet(
    num_heads=cfg.heads,
    overcluster_heads=cfg.overcluster_heads,
    input_size=INPUT_SIZE,
    kernel_size=cfg.conv_size,
    init=cfg.init,
    momentum=cfg.bn_momentum,
    epsilon=cfg.bn_epsilon,
    compute_dtype=jnp.dtype(cfg.compute_dtype),
    rngs=nnx.Rngs(key),
  )


def pair_inputs(cfg: Config, key: jax.Array, images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """uint8 ``[B, 28, 28, 1]`` -> ``(x [B, 24, 24, 1], x' [repeats B, 24, 24, 1])`` float32;
  ``x'`` holds ``repeats`` transforms of the whole batch, one batch after another."""
  if not cfg.transforms.startswith("official"):
    copies = jnp.tile(to_unit_float(images), (cfg.repeats, 1, 1, 1))
    return centre_crops(images, INPUT_SIZE), keras_transform(cfg.transforms, key, copies)
  key_x, key_bar = jax.random.split(key)
  if cfg.transforms == "official-torchvision":  # on the 8-bit images, as Pillow
    make_x, make_bar, source = data.pil_crop_resize, data.iic_torchvision_transform, images
  else:
    make_x, make_bar, source = data.crop_resize, data.iic_official_transform, to_unit_float(images)
  x = make_x(
    key_x,
    source,
    crop_size=OFFICIAL_CROP,
    out_size=INPUT_SIZE,
    centre_probability=cfg.x_centre_probability,
  )
  return x, make_bar(key_bar, jnp.tile(source, (cfg.repeats, 1, 1, 1)), out_size=INPUT_SIZE)


def eval_inputs(cfg: Config, images: jax.Array) -> jax.Array:
  """The deterministic evaluation input: the centre 24 crop (keras, keras-book) or the
  centre 20 crop resized to 24 (official; by Pillow's resize for official-torchvision)."""
  if not cfg.transforms.startswith("official"):
    return centre_crops(images, INPUT_SIZE)
  if cfg.transforms == "official-torchvision":
    return data.pil_crop_resize(None, images, crop_size=OFFICIAL_CROP, out_size=INPUT_SIZE)
  return data.crop_resize(None, to_unit_float(images), crop_size=OFFICIAL_CROP, out_size=INPUT_SIZE)


def training_images(cfg: Config) -> np.ndarray:
  """uint8 ``[N, 28, 28, 1]``, no labels: the train split, or with ``train_images="train+test"``
  the train split then the test split, cut to ``cfg.max_train_examples``."""
  if cfg.train_images == "train":
    return image_split(cfg, "train")["image"]
  splits = [data.load_mnist(split, data_dir=cfg.data_dir)[0] for split in ("train", "test")]
  return np.concatenate(splits)[: cfg.max_train_examples, ..., None]


def repeated_pair_losses(logits_x: jax.Array, logits_bar: jax.Array, repeats: int) -> jax.Array:
  """Per head, ``iic_loss`` of the pairs ``(x_i, x'_ri)``: ``logits_x`` ``[H, B, K]`` of the
  images once, ``logits_bar`` ``[H, repeats B, K]``; the predictions of ``x`` are repeated,
  which gives the loss and gradient of ``repeats`` explicit copies at the cost of one."""
  p_x = jnp.tile(jax.nn.softmax(logits_x), (1, repeats, 1))
  return jax.vmap(iic_loss)(p_x, jax.nn.softmax(logits_bar))


def build_task(cfg: Config, tables: dict[str, np.ndarray] | None = None) -> Task:
  """The IIC clustering task of ``cfg``. Each evaluation stores its contingency
  tables ``[seeds, heads, clusters, classes]`` (test-image counts) in ``tables``
  under ``"contingency"`` when a dict is given."""
  train_data, eval_data = {"image": training_images(cfg)}, image_split(cfg, "test")
  num_eval = len(eval_data["label"])
  tx = optax.adam(cfg.learning_rate)
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: _make_net(cfg, 0)))

  def init(key):
    _, params, stats = nnx.split(_make_net(cfg, key), nnx.Param, nnx.BatchStat)
    return {"params": params, "batch_stats": stats, "opt_state": tx.init(params)}

  def loss_fn(params, stats, images, key):
    x, x_bar = pair_inputs(cfg, key, images)  # [B, ...] and [repeats B, ...]
    model = nnx.merge(graphdef, params, stats, copy=True)  # fresh Variables in this trace
    n = images.shape[0]
    if cfg.batchnorm == "joint":
      main, over = model(jnp.concatenate([x, x_bar]), train=True)
      split = lambda logits: (logits[:, :n], logits[:, n:])
      main, over = split(main), None if over is None else split(over)
    else:
      (main_x, over_x), (main_bar, over_bar) = model(x, train=True), model(x_bar, train=True)
      main, over = (main_x, main_bar), None if over_x is None else (over_x, over_bar)
    head_losses = repeated_pair_losses(*main, cfg.repeats)
    loss = jnp.sum(head_losses)
    metrics = {f"loss_head_{h}": head_losses[h] for h in range(cfg.heads)}
    if over is not None:
      over_losses = repeated_pair_losses(*over, cfg.repeats)
      metrics["overcluster_loss"] = jnp.mean(over_losses)
      loss = loss + jnp.sum(over_losses)
    return loss, (metrics, nnx.state(model, nnx.BatchStat))

  def train_step(state, batch, key):
    state, loss, (metrics, stats), _ = gradient_step(
      tx, loss_fn, state, state["batch_stats"], batch["image"], key
    )
    return {**state, "batch_stats": stats}, {"loss": loss, **metrics}

  def eval_step(state, batch):
    model = nnx.merge(graphdef, state["params"], state["batch_stats"])
    main, _ = model(
      eval_inputs(cfg, batch["image"]), train=False, batch_statistics=cfg.eval_statistics == "batch"
    )
    clusters = jax.nn.one_hot(jnp.argmax(main, -1), NUM_CLASSES)  # [heads, B, clusters]
    labels = jax.nn.one_hot(batch["label"], NUM_CLASSES)  # [B, classes]
    return {"contingency": jnp.einsum("hbk,bc->bhkc", clusters, labels)}

  def finish_eval(means):
    table = means.pop("contingency")  # [seeds, heads, clusters, classes], fractions
    if tables is not None:
      tables["contingency"] = np.rint(table * num_eval)
    accuracy = np.array([[matched_accuracy(t) for t in per_seed] for per_seed in table])
    return {
      **means,
      "best_head_accuracy": accuracy.max(1),
      **{f"accuracy_head_{h}": accuracy[:, h] for h in range(cfg.heads)},
    }

  return Task(
    name=NAME,
    init=init,
    train_step=train_step,
    eval_step=eval_step,
    train_data=train_data,
    eval_data=eval_data,
    finish_eval=finish_eval,
  )


def head_selection(result: Result, cfg: Config) -> list[dict]:
  """Per seed: the best head, and the head with the lowest mean training loss at the end."""
  rows = result.run_dir.read_metrics()
  selections = []
  for i, seed in enumerate(cfg.seeds):
    train = [r for r in rows if r["split"] == "train" and r["seed"] == seed]
    window = train[-max(1, int(LOSS_WINDOW * len(train))) :]
    losses = [np.mean([r[f"loss_head_{h}"] for r in window]) for h in range(cfg.heads)]
    accuracy = [result.final_eval[f"accuracy_head_{h}"][i] for h in range(cfg.heads)]
    best, lowest = int(np.argmax(accuracy)), int(np.argmin(losses))
    selections.append(
      {
        "seed": seed,
        "best_head": best,
        "best_head_accuracy": accuracy[best],
        "lowest_loss_head": lowest,
        "lowest_loss_head_accuracy": accuracy[lowest],
        "head_accuracies": accuracy,
        "head_final_losses": losses,
      }
    )
  return selections


def plot_accuracy_vs_pairs(result: Result, cfg: Config) -> bool:
  """``accuracy_vs_pairs.png``: the best sub-head's test accuracy (mean +- std over seeds)
  against the image pairs seen, beside the official run's points."""
  steps, mean, std = eval_curve(result.run_dir.read_metrics(), "best_head_accuracy")
  if not steps:
    return False
  pairs = [s * cfg.batch_size * cfg.repeats for s in steps]
  return plotting.lines_with_bands(
    pairs,
    {f"ours, best sub-head (seeds {list(cfg.seeds)})": (mean, std)},
    result.run_dir.path / "accuracy_vs_pairs.png",
    xlabel="image pairs seen",
    ylabel="test accuracy (%)",
    title="IIC on MNIST: accuracy against training length",
    log_x=True,
    reference=REFERENCE_CURVES["best_head_accuracy"],
  )


def plot_contingency(result: Result, selections: list[dict]) -> bool:
  """``contingency.png``: per seed, the lowest-loss head's test images per (cluster, digit)
  (``lowest_loss_head_table`` of ``selections``), row ``j`` the cluster matched to digit
  ``j``, so merged and split digits stand out off the diagonal."""
  titles = [
    f"seed {s['seed']}, head {s['lowest_loss_head']} (lowest loss): "
    f"{100 * s['lowest_loss_head_accuracy']:.2f}%\nrows: clusters matched to digit; "
    "columns: digit"
    for s in selections
  ]
  return plotting.heatmaps(
    [np.asarray(s["lowest_loss_head_table"]) for s in selections],
    titles,
    result.run_dir.path / "contingency.png",
    fmt="{:.0f}",
    columns=3,
  )


def run(cfg: Config, variant: str = "custom") -> Result:
  """Trains, selects heads and writes the summary; returns the result."""
  tables: dict[str, np.ndarray] = {}
  result = fit(build_task(cfg, tables), cfg, variant=variant)
  selections = head_selection(result, cfg)
  for s, per_head in zip(selections, tables["contingency"]):
    s["head_tables"] = [matched_table(t).astype(int).tolist() for t in per_head]
    s["lowest_loss_head_table"] = s["head_tables"][s["lowest_loss_head"]]
  for key in ("best_head_accuracy", "lowest_loss_head_accuracy"):
    values = np.asarray([s[key] for s in selections])
    result.summary[key] = {
      "per_seed": values.tolist(),
      "mean": float(values.mean()),
      "std": float(values.std()),
    }
  result.summary["heads"] = selections
  result.summary["pairs_seen"] = result.summary["steps"] * cfg.batch_size * cfg.repeats
  result.run_dir.write_json("summary.json", result.summary)
  plot_accuracy_vs_pairs(result, cfg)
  plot_contingency(result, selections)
  result.run_dir.descriptions.update(FILES)
  result.run_dir.write_readme(f"{NAME} ({variant}), seeds {list(cfg.seeds)}")
  print(f"\n{NAME} ({variant}), Hungarian-matched test accuracy")
  print("| seed | best head | accuracy | lowest-loss head | accuracy |")
  print("| --- | --- | --- | --- | --- |")
  for s in selections:
    print(
      f"| {s['seed']} | {s['best_head']} | {100 * s['best_head_accuracy']:.2f}% | "
      f"{s['lowest_loss_head']} | {100 * s['lowest_loss_head_accuracy']:.2f}% |"
    )
  for key in ("best_head_accuracy", "lowest_loss_head_accuracy"):
    print(
      f"{key}: {100 * result.summary[key]['mean']:.2f} +- {100 * result.summary[key]['std']:.2f}%"
    )
  print(f"run directory: {result.run_dir.path}")
  return result

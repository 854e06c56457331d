"""Experiment 5: virtual adversarial training on MNIST: the dropout x VAT table, and
semi-supervised MNIST with 100 labels.

Supervised: the small CNN of the VAT reference (Adadelta, batch 128, 12 epochs)
with cross-entropy, optionally plus ``vat_loss`` and/or dropout, for every seed
at once with the shared harness. ``--table`` runs the four combinations
(neither / dropout / VAT / both) one after another and writes the table as
markdown and JSON: test accuracy mean +- std with per-seed values, test loss,
and seconds per epoch.

Semi-supervised (``--labels-per-class K``): the cross-entropy sees K labelled
images per class (a fixed subset per seed, cycled), VAT every training image.
The ``semi-supervised`` variant is the recipe of the official code of the ICLR
2016 paper: the MLP 784-1200-1200-10 with BatchNorm, 100 labelled + 250
unlabelled images per update, Adam 0.002 decayed x0.9 every 500 updates, 50,000
updates, eps 0.3, xi 1e-6; 1,000 training images held out for validation. ::

  gapmmd vat                          # VAT + dropout, eps=1, xi=10, 12 epochs, 1 seed
  gapmmd vat --variant quick --table  # smoke run of the table on 2048 examples
  gapmmd vat --variant full --table   # the table, eps=1 / xi=10 (Keras reimplementation)
  gapmmd vat --variant official --table   # the table, eps=2.1 / xi=1e-6 (official code)
  gapmmd vat --variant semi-supervised    # 100 labels, the paper's MLP recipe, seeds 0 1 2
  gapmmd vat --variant semi-supervised-entmin   # + entropy minimisation, eps 1 (validation)
  gapmmd vat --variant semi-supervised-cnn      # 100 labels, the small CNN
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gapmmd_jax.config import option
from gapmmd_jax.experiments._common import gradient_step, image_split, to_unit_float
from gapmmd_jax.losses import vat_loss
from gapmmd_jax.models import VatCNN, VatMLP
from gapmmd_jax.models._vat_mlp import average_stats
from gapmmd_jax.train import Result, Task, TrainConfig, fit, seeds_tag

NAME = "vat"
NUM_CLASSES = 10
# (label, dropout, vat) in the order of the reference's table.
TABLE_ROWS = (
  ("neither", False, False),
  ("dropout", True, False),
  ("VAT", False, True),
  ("both", True, True),
)
FILES = {
  "table.md": "test accuracy (mean +- std over seeds, and per seed), test loss and seconds "
  "per epoch of each configuration",
  "table.json": "the same as JSON, with each configuration's run directory",
}


# The semi-supervised recipe of the official code (takerum/vat, train_mnist_semisup.py):
# 100 epochs of 500 updates, 250 unlabelled images each from the training set less the
# 1,000 validation images.
SEMI_SUPERVISED_UPDATES = 50_000
SEMI_SUPERVISED_POOL = 60_000 - 1_000


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
  """VAT training options (the supervised CNN, or the semi-supervised MLP of the paper)."""

  model: Literal["cnn", "mlp"] = option(
    "cnn",
    "cnn: the small CNN of the Keras reference; mlp: 784-1200-1200-10 with BatchNorm "
    "after every layer (the official semi-supervised network), evaluated with BatchNorm "
    "statistics measured over the unlabelled images",
  )
  dropout: bool = option(True, "dropout 0.25 after pooling and 0.5 after the hidden layer (cnn)")
  vat: bool = option(True, "add the VAT loss (else plain cross-entropy)")
  vat_eps: float = option(
    1.0, "L2 norm of the virtual adversarial perturbation, per image (pixels in [0, 1])"
  )
  vat_xi: float = option(10.0, "finite-difference step of the power iteration")
  vat_iterations: int = option(1, "power iterations")
  vat_finite_difference: Literal["linearized", "direct"] = option(
    "linearized",
    "logit shift of the power iteration: linearized (J r, exact) or direct "
    "(f(x + r) - f(x), as the papers' float32 code)",
  )
  vat_weight: float = option(1.0, "weight of the VAT loss")
  entropy_weight: float = option(
    0.0,
    "weight of the mean prediction entropy on the unlabelled "
    "batch (VAT+EntMin, Miyato et al. 2018); 0: off",
  )
  optimizer: Literal["adadelta", "adam"] = option(
    "adadelta", "adadelta (rho 0.95, eps 1e-7: Keras) or adam (b1 0.9, b2 0.999, eps 1e-8)"
  )
  learning_rate: float = option(1.0, "initial learning rate")
  learning_rate_decay: float = option(
    1.0, "learning rate factor applied every --decay-every steps (1: constant)"
  )
  decay_every: int = option(500, "steps between learning rate decays")
  labels_per_class: int | None = option(
    None,
    "semi-supervised: labelled images per class "
    "(the rest only feed VAT; batch-size is then the "
    "unlabelled batch)",
  )
  labelled_batch_size: int = option(
    100, "labelled images per step in semi-supervised mode, cycled through the labelled set"
  )
  label_seed: int = option(
    0, "seed of the labelled subsets: seed s trains on subset (label-seed, s)"
  )
  validation_size: int = option(
    0,
    "training images held out (never trained on) whose "
    "accuracy is reported as validation_accuracy: the number to "
    "choose settings by",
  )
  validation_seed: int = option(0, "seed of the choice of validation images")
  table: bool = option(False, "run the four dropout x VAT configurations and write the table")

  def __post_init__(self):
    super().__post_init__()
    for name in ("vat_eps", "vat_xi", "learning_rate", "learning_rate_decay"):
      if getattr(self, name) <= 0:
        raise ValueError(f"{name} must be > 0, got {getattr(self, name)}.")
    for name in ("vat_weight", "entropy_weight", "validation_size"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
    for name in ("vat_iterations", "labelled_batch_size", "decay_every"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
    if self.labels_per_class is not None and self.labels_per_class < 1:
      raise ValueError(f"labels_per_class must be >= 1, got {self.labels_per_class}.")
    if self.model == "mlp" and self.dropout:
      raise ValueError("the mlp model has no dropout: pass --no-dropout.")


_SEMI_SUPERVISED_MLP = Config(
  model="mlp",
  dropout=False,
  optimizer="adam",
  learning_rate=0.002,
  learning_rate_decay=0.9,
  decay_every=500,
  labels_per_class=10,
  labelled_batch_size=100,
  batch_size=250,
  vat_eps=0.3,
  vat_xi=1e-6,
  validation_size=1000,
  seeds=(0, 1, 2),
  epochs=SEMI_SUPERVISED_UPDATES / (SEMI_SUPERVISED_POOL // 250),
  eval_every=2500,
  log_every=250,
  checkpoint_every=1000,
)
VARIANTS = {
  "quick": Config(
    epochs=1.0,
    max_train_examples=2048,
    max_eval_examples=2000,
    batch_size=64,
    eval_every=16,
    log_every=8,
    checkpoint_every=16,
  ),
  "default": Config(epochs=12.0),
  "full": Config(epochs=12.0, seeds=(0, 1, 2), eval_every=1000),
  "official": Config(epochs=12.0, seeds=(0, 1, 2), eval_every=1000, vat_eps=2.1, vat_xi=1e-6),
  "semi-supervised": _SEMI_SUPERVISED_MLP,
  # eps 1 chosen on the validation images among 0.3 / 1 / 2 (README, "Results").
  "semi-supervised-entmin": dataclasses.replace(
    _SEMI_SUPERVISED_MLP, entropy_weight=1.0, vat_eps=1.0
  ),
  "semi-supervised-cnn": Config(
    epochs=20.0,
    seeds=(0, 1, 2),
    eval_every=2000,
    dropout=False,
    labels_per_class=10,
    vat_eps=0.3,
    vat_xi=1e-6,
  ),
}
DEFAULT_VARIANT = "default"


def xla_step(cfg: Config) -> str:
  """Which step of `gapmmd bench train` this run trains, for ``gapmmd --xla auto``.

  The CNN without its VAT loss (``--no-vat``, alone) is a row of its own; the
  table, the VAT loss and the MLP count as the VAT step.
  """
  return f"{NAME} --no-vat" if cfg.model == "cnn" and not cfg.vat and not cfg.table else NAME


def labelled_subset(labels: np.ndarray, per_class: int, seed) -> np.ndarray:
  """Indices of ``per_class`` examples of each class, drawn with ``seed`` (anything
  ``np.random.default_rng`` takes): ``[10 * per_class]``, sorted."""
  rng = np.random.default_rng(seed)
  chosen = []
  for c in range(NUM_CLASSES):
    members = np.flatnonzero(labels == c)
    if len(members) < per_class:
      raise ValueError(
        f"labels_per_class={per_class} but class {c} has only {len(members)} training examples."
      )
    chosen.append(rng.choice(members, per_class, replace=False))
  return np.sort(np.concatenate(chosen))


def cycled_rows(position: jax.Array, count: int, size: int, key: jax.Array) -> jax.Array:
  """Rows ``position .. position + count - 1`` of an endless stream that visits ``range(size)``
  in a fresh random order (from ``key`` and the pass number) on every pass: ``[count]``."""
  stream = position + jnp.arange(count)
  passes, within = stream // size, stream % size
  return jax.vmap(lambda p, i: jax.random.permutation(jax.random.fold_in(key, p), size)[i])(
    passes, within
  )


def _optimizer(cfg: Config) -> optax.GradientTransformation:
  learning_rate = (
    cfg.learning_rate
    if cfg.learning_rate_decay == 1.0
    else optax.exponential_decay(
      cfg.learning_rate, cfg.decay_every, cfg.learning_rate_decay, staircase=True
    )
  )
  if cfg.optimizer == "adam":
    return optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8)
  return optax.adadelta(learning_rate, rho=0.95, eps=1e-7)


def _splits(cfg: Config) -> tuple[dict, dict]:
  """``(train, eval)`` data: the training set less the validation images, and the test
  set followed by the validation images, with per-row weights that turn the harness's
  means over all rows into each part's own mean."""
  train, test = image_split(cfg, "train"), image_split(cfg, "test")
  if cfg.validation_size > len(train["label"]) // 2:
    raise ValueError(
      f"validation_size={cfg.validation_size} exceeds half of the "
      f"{len(train['label'])} training images."
    )
  held_out = np.zeros(len(train["label"]), bool)
  held_out[
    np.random.default_rng(cfg.validation_seed).choice(
      len(held_out), cfg.validation_size, replace=False
    )
  ] = True
  rows = len(test["label"]) + cfg.validation_size
  eval_data = {k: np.concatenate([test[k], train[k][held_out]]) for k in test}
  is_test = np.arange(rows) < len(test["label"])
  eval_data["test_weight"] = np.where(is_test, rows / len(test["label"]), 0.0).astype(np.float32)
  eval_data["validation_weight"] = np.where(
    is_test, 0.0, rows / max(cfg.validation_size, 1)
  ).astype(np.float32)
  return {k: v[~held_out] for k, v in train.items()}, eval_data


def loss_function(cfg: Config, graphdef) -> Callable:
  """The training loss of ``cfg``: ``loss_fn(params, batch, labelled, key) -> (loss, metrics)``
  with ``batch`` the (unlabelled, when semi-supervised) images and ``labelled`` the labelled
  ones, both ``{"image": uint8 [B, 28, 28, 1], ...}``; ``graphdef`` the model's."""

  def loss_fn(params, batch, labelled, key):
    model = nnx.merge(graphdef, params)
    dropout_key, vat_key, _ = jax.random.split(key, 3)  # the third was the labelled draw's
    if cfg.model == "mlp":
      logits_fn = model  # batch statistics, as in training
    else:  # one dropout mask for the clean and the perturbed passes: the KL then measures
      logits_fn = lambda x: model(x, dropout_key)  # the perturbation, not two sub-networks
    logits = logits_fn(to_unit_float(labelled["image"]))
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(
      logits, labelled["label"]
    ).mean()
    metrics = {
      "cross_entropy": cross_entropy,
      "accuracy": jnp.mean(jnp.argmax(logits, -1) == labelled["label"]),
    }
    loss = cross_entropy
    unlabelled = to_unit_float(batch["image"])
    if cfg.vat:
      vat = vat_loss(
        vat_key,
        logits_fn,
        unlabelled,
        xi=cfg.vat_xi,
        eps=cfg.vat_eps,
        num_iterations=cfg.vat_iterations,
        finite_difference=cfg.vat_finite_difference,
      )
      metrics["vat"] = vat
      loss = loss + cfg.vat_weight * vat
    if cfg.entropy_weight > 0:
      log_p = jax.nn.log_softmax(logits_fn(unlabelled))
      entropy = -jnp.mean(jnp.sum(jnp.exp(log_p) * log_p, axis=-1))
      metrics["entropy"] = entropy
      loss = loss + cfg.entropy_weight * entropy
    return loss, metrics

  return loss_fn


def build_task(cfg: Config) -> Task:
  """The VAT classification task of ``cfg`` (supervised or semi-supervised)."""
  train_data, eval_data = _splits(cfg)
  tx = _optimizer(cfg)
  make: Callable[[Any], nnx.Module]
  if cfg.model == "mlp":
    make = lambda key: VatMLP(rngs=nnx.Rngs(key))
  else:
    make = lambda key: VatCNN(cfg.dropout, rngs=nnx.Rngs(key))
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: make(0)))
  semi_supervised = cfg.labels_per_class is not None
  labels = train_data["label"]
  if semi_supervised:
    train_data = {"image": train_data["image"]}  # labels of the pool are never used

  def seed_data(seed: int) -> dict[str, np.ndarray]:
    assert cfg.labels_per_class is not None  # only semi-supervised runs draw per-seed subsets
    index = labelled_subset(labels, cfg.labels_per_class, (cfg.label_seed, seed))
    return {"image": train_data["image"][index], "label": labels[index], "seed": np.uint32(seed)}

  def init(key):
    params = nnx.state(make(key))
    return {
      "params": params,
      "opt_state": tx.init(params),
      "labelled_position": jnp.zeros((), jnp.int32),
    }

  loss_fn = loss_function(cfg, graphdef)

  def train_step(state, batch, key):
    if semi_supervised:
      given = state["seed_data"]
      rows = cycled_rows(
        state["labelled_position"],
        cfg.labelled_batch_size,
        len(given["label"]),
        jax.random.key(given["seed"]),
      )
      labelled = {"image": given["image"][rows], "label": given["label"][rows]}
    else:
      labelled = batch
    state, loss, metrics, _ = gradient_step(tx, loss_fn, state, batch, labelled, key)
    state = {**state, "labelled_position": state["labelled_position"] + cfg.labelled_batch_size}
    return state, {"loss": loss, **metrics}

  def prepare_eval(state, data):
    """The MLP's BatchNorm statistics over the training images, in training-size batches."""
    model = nnx.merge(graphdef, state["params"])
    count = len(data["image"]) // cfg.batch_size
    batches = data["image"][: count * cfg.batch_size].reshape(
      count, cfg.batch_size, *data["image"].shape[1:]
    )
    per_batch = jax.lax.map(lambda x: model.batch_stats(to_unit_float(x)), batches)
    return {"params": state["params"], "stats": average_stats(per_batch, cfg.batch_size)}

  def eval_step(state, batch):
    model = nnx.merge(graphdef, state["params"])
    x = to_unit_float(batch["image"])
    logits = model(x, state["stats"]) if cfg.model == "mlp" else model(x)
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    metrics = {"accuracy": batch["test_weight"] * correct, "loss": batch["test_weight"] * loss}
    if cfg.validation_size:
      metrics["validation_accuracy"] = batch["validation_weight"] * correct
    return metrics

  return Task(
    name=NAME,
    init=init,
    train_step=train_step,
    eval_step=eval_step,
    train_data=train_data,
    eval_data=eval_data,
    prepare_eval=prepare_eval if cfg.model == "mlp" else None,
    seed_data=seed_data if semi_supervised else None,
  )


def _describe(cfg: Config) -> str:
  vat = (
    f"VAT eps={cfg.vat_eps:g} xi={cfg.vat_xi:g} iterations={cfg.vat_iterations} "
    f"weight={cfg.vat_weight:g}"
    if cfg.vat
    else "no VAT"
  )
  if cfg.entropy_weight:
    vat += f", entropy weight {cfg.entropy_weight:g}"
  labels = (
    "all labels" if cfg.labels_per_class is None else f"{cfg.labels_per_class} labels per class"
  )
  model = "MLP with BatchNorm" if cfg.model == "mlp" else "CNN"
  return f"{model}, {'dropout' if cfg.dropout else 'no dropout'}, {vat}, {labels}"


def _row(label: str, cfg: Config, result: Result) -> dict:
  summary = result.summary
  speed = summary["steps_per_second"]  # after compilation, evaluations included
  return {
    "configuration": label,
    "dropout": cfg.dropout,
    "vat": cfg.vat,
    "accuracy": summary["final_eval"]["accuracy"],
    "loss": summary["final_eval"]["loss"],
    "seconds_per_epoch": summary["steps_per_epoch"] / speed if speed else None,
    "run_dir": str(result.run_dir.path),
  }


def _markdown(rows: list[dict], title: str) -> str:
  no_vat = {r["dropout"]: r["seconds_per_epoch"] for r in rows if not r["vat"]}
  lines = [
    title,
    "",
    "| configuration | test accuracy (mean +- std) | per seed | test loss | s / epoch |",
    "| --- | --- | --- | --- | --- |",
  ]
  for r in rows:
    acc = r["accuracy"]
    per_seed = " / ".join(f"{100 * a:.2f}" for a in acc["per_seed"])
    time = "" if r["seconds_per_epoch"] is None else f"{r['seconds_per_epoch']:.1f}"
    if r["vat"] and no_vat.get(r["dropout"]) and r["seconds_per_epoch"]:
      time += f" ({r['seconds_per_epoch'] / no_vat[r['dropout']]:.2f}x no VAT)"
    lines.append(
      f"| {r['configuration']} | {100 * acc['mean']:.2f} +- {100 * acc['std']:.2f}% "
      f"| {per_seed} | {r['loss']['mean']:.4f} | {time} |"
    )
  return "\n".join(lines)


def run_table(cfg: Config, variant: str = "custom") -> list[dict]:
  """Runs the four dropout x VAT configurations of ``cfg``; writes and returns the table rows."""
  table_dir = pathlib.Path(cfg.out_dir) / (
    cfg.run_name or f"{NAME}-table-{variant}-{seeds_tag(cfg.seeds)}"
  )
  rows = []
  for label, dropout, use_vat in TABLE_ROWS:
    sub = dataclasses.replace(
      cfg, dropout=dropout, vat=use_vat, table=False, out_dir=str(table_dir), run_name=label
    )
    result = fit(build_task(sub), sub, variant=variant)
    rows.append(_row(label, sub, result))
    print(f"{label}: test accuracy {100 * rows[-1]['accuracy']['mean']:.2f}%", flush=True)
  title = (
    f"VAT table ({variant}): {cfg.epochs:g} epochs, seeds {list(cfg.seeds)}, "
    f"VAT eps={cfg.vat_eps:g} xi={cfg.vat_xi:g} iterations={cfg.vat_iterations}, devices "
    f"{[str(d) for d in jax.devices()]}"
  )
  table = _markdown(rows, title)
  if jax.process_index() == 0:
    (table_dir / "table.md").write_text(table + "\n")
    (table_dir / "table.json").write_text(json.dumps({"title": title, "rows": rows}, indent=2))
    (table_dir / "README.txt").write_text(
      f"{title}\n\nOne run directory per configuration ({', '.join(r[0] for r in TABLE_ROWS)}), "
      "each with its own README.txt.\n" + "".join(f"{k}: {v}\n" for k, v in FILES.items())
    )
  print("\n" + table + f"\n\nwritten to {table_dir}")
  return rows


def run(cfg: Config, variant: str = "custom") -> Result | list[dict]:
  """Trains ``cfg`` (or, with ``table``, all four configurations) and reports test accuracy."""
  if cfg.table:
    return run_table(cfg, variant)
  result = fit(build_task(cfg), cfg, variant=variant)
  result.summary["configuration"] = _describe(cfg)
  result.run_dir.write_json("summary.json", result.summary)
  accuracy = result.summary["final_eval"]["accuracy"]
  print(f"\n{NAME} ({variant}: {_describe(cfg)})")
  print(
    "per seed: "
    + ", ".join(f"{s}: {100 * a:.2f}%" for s, a in zip(cfg.seeds, accuracy["per_seed"]))
  )
  print(f"test accuracy {100 * accuracy['mean']:.2f} +- {100 * accuracy['std']:.2f}%")
  print(f"run directory: {result.run_dir.path}")
  return result

"""Experiment 5: virtual adversarial training on MNIST, the dropout x VAT table.

Trains the small CNN of the VAT reference (Adadelta, batch 128, 12 epochs)
with cross-entropy, optionally plus ``vat_loss`` and/or dropout, for every seed
at once with the shared harness. ``--table`` runs the four combinations
(neither / dropout / VAT / both) one after another and writes the table as
markdown and JSON: test accuracy mean +- std with per-seed values, test loss,
and seconds per epoch. ``--labels-per-class K`` trains semi-supervised: the
cross-entropy sees K labelled images per class, VAT sees every training image.

  gapmmd vat                          # VAT + dropout, eps=1, xi=10, 12 epochs, 1 seed
  gapmmd vat --variant quick --table  # smoke run of the table on 2048 examples
  gapmmd vat --variant full --table   # the table, eps=1 / xi=10 (Keras reimplementation)
  gapmmd vat --variant official --table   # the table, eps=2.1 / xi=1e-6 (official code)
  gapmmd vat --variant semi-supervised    # 10 labels per class, VAT on all 60000 images
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gapmmd_jax.config import option
from gapmmd_jax.experiments._common import gradient_step, image_split, to_unit_float
from gapmmd_jax.losses import vat_loss
from gapmmd_jax.models import VatCNN
from gapmmd_jax.train import Result, Task, TrainConfig, fit, seeds_tag

NAME = "vat"
NUM_CLASSES = 10
# (label, dropout, vat) in the order of the reference's table.
TABLE_ROWS = (("neither", False, False), ("dropout", True, False), ("VAT", False, True),
              ("both", True, True))
FILES = {
    "table.md": "test accuracy (mean +- std over seeds, and per seed), test loss and seconds "
                "per epoch of each configuration",
    "table.json": "the same as JSON, with each configuration's run directory",
}


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
  """VAT CNN training options."""

  dropout: bool = option(True, "dropout 0.25 after pooling and 0.5 after the hidden layer")
  vat: bool = option(True, "add the VAT loss (else plain cross-entropy)")
  vat_eps: float = option(1.0, "L2 norm of the virtual adversarial perturbation, per image "
                          "(pixels in [0, 1])")
  vat_xi: float = option(10.0, "finite-difference step of the power iteration")
  vat_iterations: int = option(1, "power iterations")
  vat_weight: float = option(1.0, "weight of the VAT loss")
  learning_rate: float = option(1.0, "Adadelta learning rate (rho 0.95, eps 1e-7: Keras)")
  labels_per_class: int | None = option(None, "semi-supervised: labelled images per class "
                                        "(the rest only feed VAT)")
  labelled_batch_size: int = option(100, "labelled images per step in semi-supervised mode")
  label_seed: int = option(0, "seed of the choice of labelled images")
  table: bool = option(False, "run the four dropout x VAT configurations and write the table")

  def __post_init__(self):
    super().__post_init__()
    for name in ("vat_eps", "vat_xi", "learning_rate"):
      if getattr(self, name) <= 0:
        raise ValueError(f"{name} must be > 0, got {getattr(self, name)}.")
    if self.vat_iterations < 1:
      raise ValueError(f"vat_iterations must be >= 1, got {self.vat_iterations}.")
    if self.labels_per_class is not None and self.labels_per_class < 1:
      raise ValueError(f"labels_per_class must be >= 1, got {self.labels_per_class}.")
    if self.labelled_batch_size < 1:
      raise ValueError(f"labelled_batch_size must be >= 1, got {self.labelled_batch_size}.")


VARIANTS = {
    "quick": Config(epochs=1.0, max_train_examples=2048, max_eval_examples=2000,
                    batch_size=64, eval_every=16, log_every=8, checkpoint_every=16),
    "default": Config(epochs=12.0),
    "full": Config(epochs=12.0, seeds=(0, 1, 2), eval_every=1000),
    "official": Config(epochs=12.0, seeds=(0, 1, 2), eval_every=1000, vat_eps=2.1, vat_xi=1e-6),
    "semi-supervised": Config(epochs=20.0, seeds=(0, 1, 2), eval_every=2000, dropout=False,
                              labels_per_class=10, vat_eps=0.3, vat_xi=1e-6),
}
DEFAULT_VARIANT = "default"


def labelled_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
  """Indices of ``per_class`` examples of each class, drawn with ``seed``: ``[10 * per_class]``."""
  rng = np.random.default_rng(seed)
  chosen = []
  for c in range(NUM_CLASSES):
    members = np.flatnonzero(labels == c)
    if len(members) < per_class:
      raise ValueError(f"labels_per_class={per_class} but class {c} has only {len(members)} "
                       "training examples.")
    chosen.append(rng.choice(members, per_class, replace=False))
  return np.sort(np.concatenate(chosen))


def build_task(cfg: Config) -> Task:
  """The VAT classification task of ``cfg`` (supervised or semi-supervised)."""
  train_data, eval_data = image_split(cfg, "train"), image_split(cfg, "test")
  tx = optax.adadelta(cfg.learning_rate, rho=0.95, eps=1e-7)
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: VatCNN(cfg.dropout, rngs=nnx.Rngs(0))))
  labelled = None
  if cfg.labels_per_class is not None:
    index = labelled_subset(train_data["label"], cfg.labels_per_class, cfg.label_seed)
    labelled = {"image": jnp.asarray(train_data["image"][index]),
                "label": jnp.asarray(train_data["label"][index])}
    train_data = {"image": train_data["image"]}  # labels of the rest are never used

  def init(key):
    params = nnx.state(VatCNN(cfg.dropout, rngs=nnx.Rngs(key)))
    return {"params": params, "opt_state": tx.init(params)}

  def loss_fn(params, batch, key):
    model = nnx.merge(graphdef, params)
    dropout_key, vat_key, label_key = jax.random.split(key, 3)
    if labelled is None:
      supervised = batch
    else:
      rows = jax.random.randint(label_key, (cfg.labelled_batch_size,), 0, len(labelled["label"]))
      supervised = jax.tree.map(lambda a: a[rows], labelled)
    logits = model(to_unit_float(supervised["image"]), dropout_key)
    labels = supervised["label"]
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    metrics = {"cross_entropy": cross_entropy,
               "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}
    loss = cross_entropy
    if cfg.vat:
      # One dropout mask for the clean and the perturbed passes: the KL then
      # measures the perturbation, not two different sub-networks.
      vat = vat_loss(lambda x: model(x, dropout_key), to_unit_float(batch["image"]), vat_key,
                     xi=cfg.vat_xi, eps=cfg.vat_eps, num_iterations=cfg.vat_iterations)
      metrics["vat"] = vat
      loss = loss + cfg.vat_weight * vat
    return loss, metrics

  def train_step(state, batch, key):
    state, loss, metrics, _ = gradient_step(tx, loss_fn, state, batch, key)
    return state, {"loss": loss, **metrics}

  def eval_step(state, batch):
    logits = nnx.merge(graphdef, state["params"])(to_unit_float(batch["image"]))
    return {"accuracy": (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32),
            "loss": optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])}

  return Task(name=NAME, init=init, train_step=train_step, eval_step=eval_step,
              train_data=train_data, eval_data=eval_data)


def _describe(cfg: Config) -> str:
  vat = (f"VAT eps={cfg.vat_eps:g} xi={cfg.vat_xi:g} iterations={cfg.vat_iterations} "
         f"weight={cfg.vat_weight:g}" if cfg.vat else "no VAT")
  labels = ("all labels" if cfg.labels_per_class is None
            else f"{cfg.labels_per_class} labels per class")
  return f"{'dropout' if cfg.dropout else 'no dropout'}, {vat}, {labels}"


def _row(label: str, cfg: Config, result: Result) -> dict:
  summary = result.summary
  speed = summary["steps_per_second"]  # after compilation, evaluations included
  return {"configuration": label, "dropout": cfg.dropout, "vat": cfg.vat,
          "accuracy": summary["final_eval"]["accuracy"], "loss": summary["final_eval"]["loss"],
          "seconds_per_epoch": summary["steps_per_epoch"] / speed if speed else None,
          "run_dir": str(result.run_dir.path)}


def _markdown(rows: list[dict], title: str) -> str:
  no_vat = {r["dropout"]: r["seconds_per_epoch"] for r in rows if not r["vat"]}
  lines = [title, "",
           "| configuration | test accuracy (mean +- std) | per seed | test loss | s / epoch |",
           "| --- | --- | --- | --- | --- |"]
  for r in rows:
    acc = r["accuracy"]
    per_seed = " / ".join(f"{100 * a:.2f}" for a in acc["per_seed"])
    time = "" if r["seconds_per_epoch"] is None else f"{r['seconds_per_epoch']:.1f}"
    if r["vat"] and no_vat.get(r["dropout"]) and r["seconds_per_epoch"]:
      time += f" ({r['seconds_per_epoch'] / no_vat[r['dropout']]:.2f}x no VAT)"
    lines.append(f"| {r['configuration']} | {100 * acc['mean']:.2f} +- {100 * acc['std']:.2f}% "
                 f"| {per_seed} | {r['loss']['mean']:.4f} | {time} |")
  return "\n".join(lines)


def run_table(cfg: Config, variant: str = "custom") -> list[dict]:
  """Runs the four dropout x VAT configurations of ``cfg``; writes and returns the table rows."""
  table_dir = pathlib.Path(cfg.out_dir) / (cfg.run_name
                                           or f"{NAME}-table-{variant}-{seeds_tag(cfg.seeds)}")
  rows = []
  for label, dropout, use_vat in TABLE_ROWS:
    sub = dataclasses.replace(cfg, dropout=dropout, vat=use_vat, table=False,
                              out_dir=str(table_dir),
                              run_name=label)
    result = fit(build_task(sub), sub, variant=variant)
    rows.append(_row(label, sub, result))
    print(f"{label}: test accuracy {100 * rows[-1]['accuracy']['mean']:.2f}%", flush=True)
  title = (f"VAT table ({variant}): {cfg.epochs:g} epochs, seeds {list(cfg.seeds)}, "
           f"VAT eps={cfg.vat_eps:g} xi={cfg.vat_xi:g} iterations={cfg.vat_iterations}, devices "
           f"{[str(d) for d in jax.devices()]}")
  table = _markdown(rows, title)
  if jax.process_index() == 0:
    (table_dir / "table.md").write_text(table + "\n")
    (table_dir / "table.json").write_text(json.dumps({"title": title, "rows": rows}, indent=2))
    (table_dir / "README.txt").write_text(
        f"{title}\n\nOne run directory per configuration ({', '.join(r[0] for r in TABLE_ROWS)}), "
        "each with its own README.txt.\n" + "".join(f"{k}: {v}\n" for k, v in FILES.items()))
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
  print("per seed: " + ", ".join(f"{s}: {100 * a:.2f}%" for s, a in zip(cfg.seeds,
                                                                         accuracy["per_seed"])))
  print(f"test accuracy {100 * accuracy['mean']:.2f} +- {100 * accuracy['std']:.2f}%")
  print(f"run directory: {result.run_dir.path}")
  return result

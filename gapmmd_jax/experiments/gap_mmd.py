"""Experiment 1: GAP-LeNet on MNIST or cluttered MNIST.

Trains GAP-LeNet (Adam, cross-entropy) for every seed at once with the shared
harness and reports test accuracy per seed and as mean +- std.

  gapmmd gap-mmd                    # default: full MNIST, 2 epochs, 1 seed
  gapmmd gap-mmd --variant quick    # smoke run on 2048 examples
  gapmmd gap-mmd --variant full     # reproduction: 10 epochs, seeds 0 1 2
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gapmmd_jax import data
from gapmmd_jax.config import option
from gapmmd_jax.models import GapLeNet
from gapmmd_jax.train import Result, Task, TrainConfig, fit

NAME = "gap-mmd"


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
  """GAP-LeNet training options."""

  dataset: Literal["mnist", "cluttered_mnist"] = option("mnist", "training and test data")
  learning_rate: float = option(1e-3, "Adam learning rate")
  clutter_seed: int = option(0, "seed of the cluttered-MNIST generator")


VARIANTS = {
    "quick": Config(epochs=2.0, max_train_examples=2048, max_eval_examples=1000,
                    batch_size=64, eval_every=32, log_every=8, checkpoint_every=32),
    "default": Config(epochs=2.0),
    "full": Config(epochs=10.0, seeds=(0, 1, 2)),
}
DEFAULT_VARIANT = "default"


def _load(cfg: Config, split: str) -> dict[str, np.ndarray]:
  if cfg.dataset == "mnist":
    images, labels = data.load_mnist(split, data_dir=cfg.data_dir)
  else:
    images, labels = data.load_cluttered_mnist(split, seed=cfg.clutter_seed,
                                               data_dir=cfg.data_dir)
  limit = cfg.max_train_examples if split == "train" else cfg.max_eval_examples
  return {"image": images[:limit, ..., None], "label": labels[:limit]}


def _to_float(images: jax.Array) -> jax.Array:
  return images.astype(jnp.float32) / 255.0


def build_task(cfg: Config) -> Task:
  """The GAP-LeNet classification task of ``cfg``."""
  train_data, eval_data = _load(cfg, "train"), _load(cfg, "test")
  tx = optax.adam(cfg.learning_rate)
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: GapLeNet(rngs=nnx.Rngs(0))))

  def init(key):
    params = nnx.state(GapLeNet(rngs=nnx.Rngs(key)))
    return {"params": params, "opt_state": tx.init(params)}

  def loss_fn(params, batch):
    logits, _ = nnx.merge(graphdef, params)(_to_float(batch["image"]))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    return loss, jnp.mean(jnp.argmax(logits, -1) == batch["label"])

  def train_step(state, batch, key):
    del key  # deterministic model
    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = {"loss": loss, "accuracy": accuracy, "grad_norm": optax.tree.norm(grads)}
    return {"params": params, "opt_state": opt_state}, metrics

  def eval_step(state, batch):
    logits, _ = nnx.merge(graphdef, state["params"])(_to_float(batch["image"]))
    return {"accuracy": (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32),
            "loss": optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])}

  return Task(name=NAME, init=init, train_step=train_step, eval_step=eval_step,
              train_data=train_data, eval_data=eval_data)


def run(cfg: Config, variant: str = "custom") -> Result:
  """Trains, evaluates and writes the run directory; returns the result."""
  result = fit(build_task(cfg), cfg, variant=variant)
  accuracy = result.summary["final_eval"]["accuracy"]
  print(f"\n{NAME} ({cfg.dataset}, {variant}): test accuracy over seeds {list(cfg.seeds)}")
  print("| seed | test accuracy |\n| --- | --- |")
  for seed, value in zip(cfg.seeds, accuracy["per_seed"]):
    print(f"| {seed} | {100 * value:.2f}% |")
  print(f"| mean +- std | {100 * accuracy['mean']:.2f} +- {100 * accuracy['std']:.2f}% |")
  print(f"run directory: {result.run_dir.path}")
  return result

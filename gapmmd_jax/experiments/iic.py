"""Experiment 4a: IIC clustering of MNIST (no labels in training).

The VGG-style backbone with BatchNorm and several softmax heads is trained
with ``iic_loss`` on pairs (the 24x24 centre crop of an image, a random
transform of it: rotation up to 20 degrees, or a 16/18/20-pixel crop resized
to 24), all done on device inside the jitted step; Adam 1e-3. Over-clustering
heads (50 clusters) are trained alongside (their loss is added). Every
evaluation matches each main head's clusters to the test labels (Hungarian)
and logs its accuracy; the summary reports per seed the best head and the
head with the lowest training loss (the paper's selection rule).

  gapmmd iic                       # 1 seed, 10 epochs
  gapmmd iic --variant quick       # smoke run
  gapmmd iic --variant full        # seeds 0 1 2, 30 epochs (a GPU job)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gapmmd_jax.config import option
from gapmmd_jax.experiments._common import (
    augmented_pairs,
    centre_crops,
    gradient_step,
    image_split,
)
from gapmmd_jax.losses import iic_loss
from gapmmd_jax.metrics import matched_accuracy
from gapmmd_jax.models import IICNet
from gapmmd_jax.train import Result, Task, TrainConfig, fit

NAME = "iic"
NUM_CLASSES = 10
INPUT_SIZE = 24
LOSS_WINDOW = 0.1  # fraction of the last training log rows whose head losses are averaged


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
  """IIC options; ``batch_size`` counts image pairs."""

  heads: int = option(5, "main heads (10 clusters each)")
  overcluster_heads: int = option(5, "over-clustering heads (50 clusters each); 0 for none")
  learning_rate: float = option(1e-3, "Adam learning rate")

  def __post_init__(self):
    super().__post_init__()
    if self.heads < 1 or self.overcluster_heads < 0:
      raise ValueError(f"need heads >= 1 and overcluster_heads >= 0, got {self.heads} and "
                       f"{self.overcluster_heads}.")
    if self.learning_rate <= 0:
      raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}.")


VARIANTS = {
    "quick": Config(epochs=1.0, batch_size=64, max_train_examples=1024, max_eval_examples=500,
                    eval_every=8, log_every=4, checkpoint_every=8, heads=2, overcluster_heads=1),
    "default": Config(epochs=10.0, batch_size=256, eval_every=200, log_every=20),
    "full": Config(epochs=30.0, batch_size=256, seeds=(0, 1, 2), eval_every=500, log_every=20),
}
DEFAULT_VARIANT = "default"


def _make_net(cfg: Config, key) -> IICNet:
  return IICNet(num_heads=cfg.heads, overcluster_heads=cfg.overcluster_heads,
                input_size=INPUT_SIZE, rngs=nnx.Rngs(key))


def build_task(cfg: Config) -> Task:
  """The IIC clustering task of ``cfg``."""
  train_data, eval_data = image_split(cfg, "train"), image_split(cfg, "test")
  train_data = {"image": train_data["image"]}  # unsupervised: labels never reach training
  tx = optax.adam(cfg.learning_rate)
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: _make_net(cfg, 0)))

  def init(key):
    _, params, stats = nnx.split(_make_net(cfg, key), nnx.Param, nnx.BatchStat)
    return {"params": params, "batch_stats": stats, "opt_state": tx.init(params)}

  def loss_fn(params, stats, images, key):
    x, x_bar = augmented_pairs(key, images, INPUT_SIZE)
    model = nnx.merge(graphdef, params, stats, copy=True)  # fresh Variables in this trace
    main, over = model(jnp.concatenate([x, x_bar]), train=True)
    n = images.shape[0]
    pair_loss = lambda logits: iic_loss(jax.nn.softmax(logits[:n]), jax.nn.softmax(logits[n:]))
    head_losses = jax.vmap(pair_loss)(main)
    loss = jnp.sum(head_losses)
    metrics = {f"loss_head_{h}": head_losses[h] for h in range(cfg.heads)}
    if over is not None:
      over_losses = jax.vmap(pair_loss)(over)
      metrics["overcluster_loss"] = jnp.mean(over_losses)
      loss = loss + jnp.sum(over_losses)
    return loss, (metrics, nnx.state(model, nnx.BatchStat))

  def train_step(state, batch, key):
    state, loss, (metrics, stats), _ = gradient_step(tx, loss_fn, state, state["batch_stats"],
                                                     batch["image"], key)
    return {**state, "batch_stats": stats}, {"loss": loss, **metrics}

  def eval_step(state, batch):
    x = centre_crops(batch["image"], INPUT_SIZE)
    main, _ = nnx.merge(graphdef, state["params"], state["batch_stats"])(x, train=False)
    clusters = jax.nn.one_hot(jnp.argmax(main, -1), NUM_CLASSES)  # [heads, B, clusters]
    labels = jax.nn.one_hot(batch["label"], NUM_CLASSES)  # [B, classes]
    return {"contingency": jnp.einsum("hbk,bc->bhkc", clusters, labels)}

  def finish_eval(means):
    table = means.pop("contingency")  # [seeds, heads, clusters, classes]
    accuracy = np.array([[matched_accuracy(t) for t in per_seed] for per_seed in table])
    return {**means, "best_head_accuracy": accuracy.max(1),
            **{f"accuracy_head_{h}": accuracy[:, h] for h in range(cfg.heads)}}

  return Task(name=NAME, init=init, train_step=train_step, eval_step=eval_step,
              train_data=train_data, eval_data=eval_data, finish_eval=finish_eval)


def head_selection(result: Result, cfg: Config) -> list[dict]:
  """Per seed: the best head, and the head with the lowest mean training loss at the end."""
  rows = result.run_dir.read_metrics()
  selections = []
  for i, seed in enumerate(cfg.seeds):
    train = [r for r in rows if r["split"] == "train" and r["seed"] == seed]
    window = train[-max(1, int(LOSS_WINDOW * len(train))):]
    losses = [np.mean([r[f"loss_head_{h}"] for r in window]) for h in range(cfg.heads)]
    accuracy = [result.final_eval[f"accuracy_head_{h}"][i] for h in range(cfg.heads)]
    best, lowest = int(np.argmax(accuracy)), int(np.argmin(losses))
    selections.append({"seed": seed, "best_head": best, "best_head_accuracy": accuracy[best],
                       "lowest_loss_head": lowest, "lowest_loss_head_accuracy": accuracy[lowest],
                       "head_accuracies": accuracy, "head_final_losses": losses})
  return selections


def run(cfg: Config, variant: str = "custom") -> Result:
  """Trains, selects heads and writes the summary; returns the result."""
  result = fit(build_task(cfg), cfg, variant=variant)
  selections = head_selection(result, cfg)
  for key in ("best_head_accuracy", "lowest_loss_head_accuracy"):
    values = np.asarray([s[key] for s in selections])
    result.summary[key] = {"per_seed": values.tolist(), "mean": float(values.mean()),
                           "std": float(values.std())}
  result.summary["heads"] = selections
  result.run_dir.write_json("summary.json", result.summary)
  print(f"\n{NAME} ({variant}), Hungarian-matched test accuracy")
  print("| seed | best head | accuracy | lowest-loss head | accuracy |")
  print("| --- | --- | --- | --- | --- |")
  for s in selections:
    print(f"| {s['seed']} | {s['best_head']} | {100 * s['best_head_accuracy']:.2f}% | "
          f"{s['lowest_loss_head']} | {100 * s['lowest_loss_head_accuracy']:.2f}% |")
  for key in ("best_head_accuracy", "lowest_loss_head_accuracy"):
    print(f"{key}: {100 * result.summary[key]['mean']:.2f} +- "
          f"{100 * result.summary[key]['std']:.2f}%")
  print(f"run directory: {result.run_dir.path}")
  return result

"""Experiment 4c: MINE clustering of MNIST, evaluated by a linear probe.

An encoder (the VGG backbone of IIC and a dense latent layer) is trained
without labels to maximise the MINE lower bound on the mutual information
between the latents of an image's centre crop and of a random transform of
it (rotation or crop-and-resize, on device), with a statistics network of
1024 hidden units on the latent pair; Adam. The latents are then judged by a
linear probe (dense 256 -> dense 10, no non-linearity, Adam) trained on the
training-set latents and evaluated on the test set; for comparison with the
Keras reference, whose probe was trained and evaluated on the test set, that
number is reported too, labelled as such.

The ``keras`` variant follows the Keras book's run (``mine-13.8.1.py``):
batches of 1024 pairs for 200 epochs (~12M pairs), x and x' encoded in
separate calls (``--batchnorm separate``: separate BatchNorm statistics). ::

  gapmmd mine-cluster                    # 1 seed, 10 epochs, latent dimension 10
  gapmmd mine-cluster --variant quick    # smoke run
  gapmmd mine-cluster --variant keras    # the Keras recipe, 200 epochs (a GPU job)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

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
from gapmmd_jax.losses import mine_lower_bound
from gapmmd_jax.models import MineEncoder
from gapmmd_jax.train import Result, Task, TrainConfig, fit

NAME = "mine-cluster"
INPUT_SIZE = 24
NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
  """MINE-clustering options; ``batch_size`` counts image pairs."""

  latent_dim: int = option(10, "dimension of the latent code")
  statistic_hidden: int = option(1024, "hidden units of the statistics network")
  learning_rate: float = option(1e-3, "Adam learning rate of the encoder and statistics network")
  probe_epochs: int = option(30, "epochs of the linear probe")
  probe_learning_rate: float = option(1e-3, "Adam learning rate of the linear probe")
  compute_dtype: Literal["float32", "bfloat16"] = option(
    "float32",
    "dtype of the backbone's convolutions (inputs and weights; parameters, BatchNorm and "
    "the loss stay float32)",
  )
  batchnorm: Literal["joint", "separate"] = option(
    "joint", "x and x' through one encoder call (shared batch statistics) or two (Keras)"
  )

  def __post_init__(self):
    super().__post_init__()
    for name in ("latent_dim", "statistic_hidden", "probe_epochs"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
    if self.learning_rate <= 0 or self.probe_learning_rate <= 0:
      raise ValueError("learning rates must be > 0.")


VARIANTS = {
  "quick": Config(
    epochs=1.0,
    batch_size=64,
    max_train_examples=1024,
    max_eval_examples=500,
    eval_every=8,
    log_every=4,
    checkpoint_every=8,
    statistic_hidden=64,
    probe_epochs=3,
  ),
  "default": Config(epochs=10.0, batch_size=256, eval_every=200, log_every=20),
  "keras": Config(
    epochs=200.0,
    batch_size=1024,
    batchnorm="separate",
    eval_every=500,
    log_every=20,
    checkpoint_every=250,
  ),
}
DEFAULT_VARIANT = "default"


def _make_net(cfg: Config, key) -> MineEncoder:
  return MineEncoder(
    latent_dim=cfg.latent_dim,
    hidden=cfg.statistic_hidden,
    input_size=INPUT_SIZE,
    compute_dtype=jnp.dtype(cfg.compute_dtype),
    rngs=nnx.Rngs(key),
  )


def build_task(cfg: Config) -> Task:
  """The MINE-clustering task of ``cfg``."""
  train_data, eval_data = image_split(cfg, "train"), image_split(cfg, "test")
  train_data = {"image": train_data["image"]}  # unsupervised
  tx = optax.adam(cfg.learning_rate)
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: _make_net(cfg, 0)))

  def statistics(model, images, key, *, train):
    transform_key, shuffle_key = jax.random.split(key)
    x, x_bar = augmented_pairs(transform_key, images, INPUT_SIZE)
    if cfg.batchnorm == "joint":
      z = model.encode(jnp.concatenate([x, x_bar]), train=train)
      z, z_bar = z[: len(x)], z[len(x) :]
    else:
      z, z_bar = model.encode(x, train=train), model.encode(x_bar, train=train)
    return model.statistic(z, z_bar), model.statistic(z, jax.random.permutation(shuffle_key, z_bar))

  def init(key):
    _, params, stats = nnx.split(_make_net(cfg, key), nnx.Param, nnx.BatchStat)
    return {"params": params, "batch_stats": stats, "opt_state": tx.init(params)}

  def loss_fn(params, stats, images, key):
    model = nnx.merge(graphdef, params, stats, copy=True)  # fresh Variables in this trace
    bound = mine_lower_bound(*statistics(model, images, key, train=True))
    return -bound, (bound, nnx.state(model, nnx.BatchStat))

  def train_step(state, batch, key):
    state, loss, (bound, stats), _ = gradient_step(
      tx, loss_fn, state, state["batch_stats"], batch["image"], key
    )
    return {**state, "batch_stats": stats}, {"loss": loss, "mi_bound": bound}

  def eval_step(state, batch):
    model = nnx.merge(graphdef, state["params"], state["batch_stats"])
    key = jax.random.key(0)  # the same transforms at every evaluation
    t_joint, t_marginal = statistics(model, batch["image"], key, train=False)
    return {"t_joint": t_joint, "exp_t_marginal": jnp.exp(t_marginal)}

  def finish_eval(means):
    return {"mi_bound": means["t_joint"] - np.log(means["exp_t_marginal"])}

  return Task(
    name=NAME,
    init=init,
    train_step=train_step,
    eval_step=eval_step,
    train_data=train_data,
    eval_data=eval_data,
    finish_eval=finish_eval,
  )


def linear_probe(
  key: jax.Array,
  train_z: np.ndarray | jax.Array,
  train_y: np.ndarray | jax.Array,
  test_z: np.ndarray,
  test_y: np.ndarray,
  *,
  epochs: int,
  learning_rate: float,
  batch_size: int = 256,
) -> float:
  """Test accuracy of dense(256) -> dense(10), no non-linearity, trained with Adam."""
  init_key, order_key = jax.random.split(key)
  k1, k2 = jax.random.split(init_key)
  glorot = jax.nn.initializers.glorot_uniform()
  params = {
    "w1": glorot(k1, (train_z.shape[1], 256)),
    "b1": jnp.zeros(256),
    "w2": glorot(k2, (256, NUM_CLASSES)),
    "b2": jnp.zeros(NUM_CLASSES),
  }
  mean, std = train_z.mean(0), train_z.std(0) + 1e-6  # the probe sees standardised latents
  train_z, test_z = (train_z - mean) / std, (test_z - mean) / std
  logits = lambda p, z: (z @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
  tx = optax.adam(learning_rate)
  steps = max(1, len(train_z) // batch_size)

  def epoch(carry, epoch_key):
    def step(carry, rows):
      p, opt = carry
      loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        logits(p, train_z[rows]), train_y[rows]
      ).mean()
      updates, opt = tx.update(jax.grad(loss)(p), opt, p)
      return (optax.apply_updates(p, updates), opt), None

    order = jax.random.permutation(epoch_key, len(train_z))[: steps * batch_size]
    return jax.lax.scan(step, carry, order.reshape(steps, batch_size))[0], None

  train_z, train_y = jnp.asarray(train_z), jnp.asarray(train_y)
  (params, _), _ = jax.jit(lambda c, k: jax.lax.scan(epoch, c, k))(
    (params, tx.init(params)), jax.random.split(order_key, epochs)
  )
  return float(jnp.mean(jnp.argmax(logits(params, jnp.asarray(test_z)), -1) == test_y))


def run(cfg: Config, variant: str = "custom") -> Result:
  """Trains the encoder, probes its latents per seed and writes the summary."""
  task = build_task(cfg)
  result = fit(task, cfg, variant=variant)
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: _make_net(cfg, 0)))
  train_split, test_split = image_split(cfg, "train"), task.eval_data

  @jax.jit
  def encode(params, stats, images):
    return nnx.merge(graphdef, params, stats).encode(centre_crops(images, INPUT_SIZE), train=False)

  probes = []
  for i, seed in enumerate(cfg.seeds):
    params, stats = (
      jax.tree.map(lambda a, i=i: a[i], result.state["state"][k]) for k in ("params", "batch_stats")
    )
    latents = {
      name: np.concatenate(
        [
          np.asarray(encode(params, stats, chunk))
          for chunk in np.array_split(split["image"], max(1, len(split["image"]) // 1000))
        ]
      )
      for name, split in (("train", train_split), ("test", test_split))
    }
    key = jax.random.key(seed)
    kwargs: dict[str, Any] = dict(epochs=cfg.probe_epochs, learning_rate=cfg.probe_learning_rate)
    probes.append(
      {
        "seed": seed,
        "probe_accuracy": linear_probe(
          key,
          latents["train"],
          train_split["label"],
          latents["test"],
          test_split["label"],
          **kwargs,
        ),
        "probe_trained_on_test_accuracy": linear_probe(
          key, latents["test"], test_split["label"], latents["test"], test_split["label"], **kwargs
        ),
      }
    )
  for name in ("probe_accuracy", "probe_trained_on_test_accuracy"):
    values = np.asarray([p[name] for p in probes])
    result.summary[name] = {
      "per_seed": values.tolist(),
      "mean": float(values.mean()),
      "std": float(values.std()),
    }
  result.run_dir.write_json("summary.json", result.summary)
  print(f"\n{NAME} ({variant}), latent dimension {cfg.latent_dim}")
  for p in probes:
    print(
      f"seed {p['seed']}: linear probe (train -> test) {100 * p['probe_accuracy']:.2f}%, "
      f"probe trained and tested on the test set {100 * p['probe_trained_on_test_accuracy']:.2f}%"
    )
  print(f"run directory: {result.run_dir.path}")
  return result

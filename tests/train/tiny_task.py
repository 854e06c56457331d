"""A small softmax-regression task on real MNIST for testing the harness."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gapmmd_jax import data
from gapmmd_jax.train import Task, TrainConfig


def make_task(data_dir, num_train=640, num_eval=300) -> Task:
  images, labels = data.load_mnist("train", data_dir=data_dir)
  test_images, test_labels = data.load_mnist("test", data_dir=data_dir)
  tx = optax.sgd(0.1, momentum=0.9)

  def init(key):
    params = {"w": 0.01 * jax.random.normal(key, (784, 10)), "b": jnp.zeros(10)}
    return {"params": params, "opt_state": tx.init(params)}

  def logits(params, batch):
    return batch["image"].reshape(len(batch["image"]), -1) / 255.0 @ params["w"] + params["b"]

  def train_step(state, batch, key):
    noisy = dict(batch, image=batch["image"] + 8.0 * jax.random.normal(key, batch["image"].shape))
    loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(
      logits(p, noisy), batch["label"]
    ).mean()
    loss, grads = jax.value_and_grad(loss_fn)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    return (
      {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state},
      {"loss": loss, "grad_norm": optax.tree.norm(grads)},
    )

  def eval_step(state, batch):
    correct = jnp.argmax(logits(state["params"], batch), -1) == batch["label"]
    return {"accuracy": correct.astype(jnp.float32)}

  return Task(
    name="tiny",
    init=init,
    train_step=train_step,
    eval_step=eval_step,
    train_data={"image": images[:num_train].astype(np.float32), "label": labels[:num_train]},
    eval_data={"image": test_images[:num_eval].astype(np.float32), "label": test_labels[:num_eval]},
  )


def config(out_dir, **overrides) -> TrainConfig:
  base = TrainConfig(
    batch_size=64,
    epochs=2.5,
    eval_every=7,
    log_every=3,
    checkpoint_every=4,
    eval_batch_size=128,
    out_dir=str(out_dir),
    run_name="run",
    progress=False,
  )
  return dataclasses.replace(base, **overrides)


def mmd_samples() -> tuple[np.ndarray, np.ndarray]:
  """The two sample sets (4000 x 16 and 3000 x 16, float32) of the sharded-MMD checks."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4000, 16)).astype(np.float32)
  y = (rng.normal(size=(3000, 16)) + 0.1).astype(np.float32)
  return x, y

"""Pieces every experiment uses: its data split, pixel scaling and the optimizer step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gapmmd_jax import data
from gapmmd_jax.train import TrainConfig


def image_split(
  cfg: TrainConfig,
  split: str,
  load: Callable[..., tuple[np.ndarray, np.ndarray]] = data.load_mnist,
  **load_options,
) -> dict[str, np.ndarray]:
  """``{"image": [N, H, W, 1] uint8, "label": [N] int32}`` of ``split``.

  ``load(split, data_dir=..., **load_options)`` reads the grey-scale images
  (MNIST by default); the split is cut to ``cfg.max_train_examples`` or
  ``cfg.max_eval_examples``.
  """
  images, labels = load(split, data_dir=cfg.data_dir, **load_options)
  limit = cfg.max_train_examples if split == "train" else cfg.max_eval_examples
  return {"image": images[:limit, ..., None], "label": labels[:limit]}


def validation_indices(num_train: int, size: int, seed: int) -> np.ndarray:
  """Sorted indices of the ``size`` of ``num_train`` training images held out for validation."""
  if size > num_train:
    raise ValueError(f"validation_size={size} exceeds the {num_train} training images.")
  return np.sort(np.random.default_rng(seed).choice(num_train, size, replace=False))


def to_unit_float(images: jax.Array) -> jax.Array:
  """uint8 pixels -> float32 in [0, 1]."""
  return images.astype(jnp.float32) / 255.0


def centre_crops(images: jax.Array, size: int = 24) -> jax.Array:
  """uint8 ``[B, H, W, C]`` -> float32 ``[B, size, size, C]`` centre crops in [0, 1]."""
  return data.centre_crop(to_unit_float(images), size)


def keras_transform(name: str, key: jax.Array, images: jax.Array, size: int = 24) -> jax.Array:
  """``x'`` of float ``[B, H, W, C]`` images by the transforms ``name``: ``"keras"``
  (:func:`gapmmd_jax.data.random_rotate_or_crop`) or ``"keras-book"``
  (:func:`gapmmd_jax.data.keras_book_transform`); ``[B, size, size, C]`` float32."""
  if name == "keras":
    return data.random_rotate_or_crop(key, images, out_size=size)
  if name == "keras-book":
    return data.keras_book_transform(key, images, out_size=size)
  raise ValueError(f"transforms must be 'keras' or 'keras-book', got {name!r}.")


def augmented_pairs(
  key: jax.Array, images: jax.Array, size: int = 24, transforms: str = "keras"
) -> tuple[jax.Array, jax.Array]:
  """IIC-style pairs of uint8 ``[B, H, W, C]`` images: the ``size`` centre crops, and a random
  transform of each by :func:`keras_transform` ``transforms``, float32."""
  return centre_crops(images, size), keras_transform(transforms, key, to_unit_float(images), size)


def gradient_step(
  tx: optax.GradientTransformation, loss_fn: Callable, state: dict, *args
) -> tuple[dict, jax.Array, Any, Any]:
  """One optimizer step on ``state["params"]`` for ``loss_fn(params, *args) -> (loss, aux)``.

  Returns:
    ``(state, loss, aux, grads)``: ``state`` with ``params`` and ``opt_state``
    updated and every other entry kept.
  """
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], *args)
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  return (
    {**state, "params": optax.apply_updates(state["params"], updates), "opt_state": opt_state},
    loss,
    aux,
    grads,
  )


def eval_curve(
  rows: list[dict], key: str, scale: float = 100.0
) -> tuple[list[int], np.ndarray, np.ndarray | None]:
  """``(steps, mean, std)`` of the evaluation metric ``key`` over seeds, per step that logged
  it (``rows``: a run's ``metrics.jsonl``); values times ``scale``; ``std`` None for one seed."""
  evals = [r for r in rows if r["split"] == "eval" and key in r]
  steps = sorted({r["step"] for r in evals})
  per_step = [[scale * r[key] for r in evals if r["step"] == s] for s in steps]
  mean = np.asarray([np.mean(v) for v in per_step])
  several = len({r["seed"] for r in evals}) > 1
  return steps, mean, np.asarray([np.std(v) for v in per_step]) if several else None

"""Layers shared by the models."""

from __future__ import annotations

import jax


def max_pool(x: jax.Array, window: int = 2) -> jax.Array:
  """Non-overlapping ``window x window`` max-pool of ``[B, H, W, C]`` -> ``[B, H // w, W // w, C]``.

  The values of ``nnx.max_pool(x, (w, w), strides=(w, w))`` ("VALID": trailing
  rows and columns that do not fill a window are dropped). Written as a
  reshape and a max so that its gradient is an elementwise mask: XLA's CPU
  backend lowers the gradient of a windowed max-pool to a select-and-scatter
  that costs 10-20x this one (and more than the convolutions around it). Where
  several entries of a window tie for the maximum, the gradient is split
  between them instead of going to the first.
  """
  batch, height, width, channels = x.shape
  rows, cols = height // window, width // window
  x = x[:, : rows * window, : cols * window, :]
  return x.reshape(batch, rows, window, cols, window, channels).max(axis=(2, 4))

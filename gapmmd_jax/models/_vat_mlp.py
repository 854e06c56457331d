"""The fully connected network of VAT's semi-supervised MNIST run, BatchNorm after every layer."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

# (mean [D], variance [D]) of one BatchNorm layer.
LayerStats = tuple[jax.Array, jax.Array]


class VatMLP(nnx.Module):
  """784-1200-1200-10: dense, BatchNorm, ReLU; the output layer dense and BatchNorm.

  The network of the official VAT code (Miyato et al., ICLR 2016, repository
  takerum/vat, ``fnn_mnist_semisup.py``). Dense kernels start from
  N(0, 1 / fan_in) as there; the dense biases are left out because the
  BatchNorm that follows removes any per-unit shift. BatchNorm normalises
  with ``eps`` inside the square root and learns a scale (ones) and a shift
  (zeros).

  The network keeps no running statistics: called without ``stats`` it
  normalises each layer with the statistics of its batch (biased variance),
  as training does; evaluation passes ``stats``, the population statistics
  that :meth:`batch_stats` measures and ``average_stats`` pools.
  """

  def __init__(
    self, widths: Sequence[int] = (784, 1200, 1200, 10), eps: float = 1e-6, *, rngs: nnx.Rngs
  ):
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "normal")
    self.dense = nnx.List(
      [
        nnx.Linear(a, b, use_bias=False, kernel_init=init, rngs=rngs)
        for a, b in itertools.pairwise(widths)
      ]
    )
    self.scale = nnx.List([nnx.Param(jnp.ones((b,))) for b in widths[1:]])
    self.shift = nnx.List([nnx.Param(jnp.zeros((b,))) for b in widths[1:]])
    self.eps = eps

  def _forward(self, x: jax.Array, stats: Sequence[LayerStats] | None):
    h = x.reshape(x.shape[0], -1)
    measured = []
    last = len(self.dense) - 1
    for i, dense in enumerate(self.dense):
      h = dense(h)
      if stats is None:
        mean = jnp.mean(h, axis=0)
        var = jnp.mean(jnp.square(h - mean), axis=0)
        measured.append((mean, var))
      else:
        mean, var = stats[i]
      h = (h - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[i] + self.shift[i]
      if i < last:
        h = nnx.relu(h)
    return h, measured

  def __call__(self, x: jax.Array, stats: Sequence[LayerStats] | None = None) -> jax.Array:
    """``[B, ...]`` images -> ``[B, classes]`` logits (batch statistics unless ``stats``)."""
    return self._forward(x, stats)[0]

  def batch_stats(self, x: jax.Array) -> list[LayerStats]:
    """Each layer's (mean, biased variance) over the batch ``x`` ``[B, ...]`` (training mode)."""
    return self._forward(x, None)[1]


def average_stats(per_batch: list[LayerStats], batch_size: int) -> list[LayerStats]:
  """Population statistics from per-batch ones stacked on a leading axis ``[N, D]``.

  The mean of the batch means, and the mean of the batch variances made
  unbiased (times ``b / (b - 1)``): what the official code's final pass over
  the unlabelled set computes.
  """
  correction = batch_size / (batch_size - 1)
  return [(jnp.mean(mean, axis=0), correction * jnp.mean(var, axis=0)) for mean, var in per_batch]

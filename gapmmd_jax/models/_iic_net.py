"""The VGG-style IIC network: a BatchNorm backbone and several softmax heads."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class IICNet(nnx.Module):
  """Backbone 64-M-128-M-256-M-512 (3x3 conv, BatchNorm, ReLU; M = max-pool 2),
  then ``num_heads`` linear heads of ``num_clusters`` and ``overcluster_heads``
  heads of ``overcluster_clusters`` on the flattened features (3x3x512 for
  24x24 inputs).
  """

  def __init__(self, *, num_heads: int = 5, num_clusters: int = 10, overcluster_heads: int = 5,
               overcluster_clusters: int = 50, in_channels: int = 1, input_size: int = 24,
               rngs: nnx.Rngs):
    widths = (64, 128, 256, 512)
    self.convs = nnx.List([nnx.Conv(c_in, c_out, (3, 3), padding="SAME", use_bias=False,
                                    rngs=rngs)
                           for c_in, c_out in zip((in_channels, *widths[:-1]), widths)])
    self.norms = nnx.List([nnx.BatchNorm(c, momentum=0.9, rngs=rngs) for c in widths])
    flat = (input_size // 8) ** 2 * widths[-1]
    self.heads = nnx.List([nnx.Linear(flat, num_clusters, rngs=rngs) for _ in range(num_heads)])
    self.overcluster = nnx.List([nnx.Linear(flat, overcluster_clusters, rngs=rngs)
                                 for _ in range(overcluster_heads)])

  def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array | None]:
    """``[B, 24, 24, C]`` -> ``(logits [heads, B, clusters], over-clustering logits or None)``.

    ``train=True`` normalises with the batch statistics and updates the
    running ones; ``train=False`` uses the running statistics.
    """
    for index, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      x = nnx.relu(norm(conv(x), use_running_average=not train))
      if index < len(self.convs) - 1:
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    main = jnp.stack([head(x) for head in self.heads])
    over = jnp.stack([head(x) for head in self.overcluster]) if len(self.overcluster) else None
    return main, over

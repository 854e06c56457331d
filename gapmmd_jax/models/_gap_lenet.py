"""GAP-LeNet: a small CNN whose classifier sees only globally pooled features."""

from __future__ import annotations

import jax
from flax import nnx

from gapmmd_jax.models._layers import max_pool


class GapLeNet(nnx.Module):
  """conv5x5(32)-ReLU-pool2-conv5x5(64)-ReLU-pool2-GAP-dense(10, no bias).

  The dense layer's weights are initialised N(0, 0.01^2); with no bias, the
  class activation map of class ``c`` is ``sum_k W[k, c] * feature_map_k``.
  """

  def __init__(self, in_channels: int = 1, num_classes: int = 10, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(in_channels, 32, (5, 5), padding="SAME", rngs=rngs)
    self.conv2 = nnx.Conv(32, 64, (5, 5), padding="SAME", rngs=rngs)
    self.classifier = nnx.Linear(
      64, num_classes, use_bias=False, kernel_init=nnx.initializers.normal(0.01), rngs=rngs
    )

  def feature_maps(self, x: jax.Array) -> jax.Array:
    """``[B, H, W, C_in]`` images -> ``[B, H/4, W/4, 64]`` last conv maps."""
    x = max_pool(nnx.relu(self.conv1(x)))
    return max_pool(nnx.relu(self.conv2(x)))

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns ``(logits [B, classes], gap_features [B, 64])``."""
    features = self.feature_maps(x).mean(axis=(1, 2))
    return self.classifier(features), features

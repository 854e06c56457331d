"""The MNIST -> MNIST-M network of the DANN paper: features, label head, domain head."""

from __future__ import annotations

import jax
from flax import nnx

from gapmmd_jax.models._layers import max_pool
from gapmmd_jax.ops import gradient_reversal


class DomainAdaptationNet(nnx.Module):
  """conv5x5(32)-ReLU-pool2-conv5x5(48)-ReLU-pool2 features (768 values for 28x28),
  label head 100-100-10, domain head GRL-100-2.

  Convolutions are unpadded, as in the paper's MNIST architecture.
  """

  def __init__(self, in_channels: int = 3, num_classes: int = 10, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(in_channels, 32, (5, 5), padding="VALID", rngs=rngs)
    self.conv2 = nnx.Conv(32, 48, (5, 5), padding="VALID", rngs=rngs)
    self.label1 = nnx.Linear(4 * 4 * 48, 100, rngs=rngs)
    self.label2 = nnx.Linear(100, 100, rngs=rngs)
    self.label_out = nnx.Linear(100, num_classes, rngs=rngs)
    self.domain1 = nnx.Linear(4 * 4 * 48, 100, rngs=rngs)
    self.domain_out = nnx.Linear(100, 2, rngs=rngs)

  def features(self, x: jax.Array) -> jax.Array:
    """``[B, 28, 28, C]`` normalised images -> ``[B, 768]`` features."""
    x = max_pool(nnx.relu(self.conv1(x)))
    x = max_pool(nnx.relu(self.conv2(x)))
    return x.reshape(x.shape[0], -1)

  def classify(self, features: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """``[B, 768]`` -> ``(logits [B, 10], (hidden1 [B, 100], hidden2 [B, 100]))``."""
    hidden1 = nnx.relu(self.label1(features))
    hidden2 = nnx.relu(self.label2(hidden1))
    return self.label_out(hidden2), (hidden1, hidden2)

  def domain(self, features: jax.Array, lam: jax.Array) -> jax.Array:
    """Domain logits ``[B, 2]`` (0 = source) through the gradient reversal layer."""
    return self.domain_out(nnx.relu(self.domain1(gradient_reversal(features, lam))))

"""The small CNN of the VAT experiment, with optional dropout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gapmmd_jax.models._layers import max_pool


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  """Inverted dropout; the identity when ``key`` is None or ``rate`` is 0."""
  if key is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


class VatCNN(nnx.Module):
  """conv3x3(32)-ReLU-conv3x3(32)-ReLU-pool2-[drop .25]-dense(128)-ReLU-[drop .5]-dense(10).

  Convolutions are unpadded ("valid"), so 28x28 inputs give 12x12x32 before
  the dense layers. Weights use Glorot-uniform initialisation, biases zeros
  (the Keras defaults of the reference). Dropout is applied only when a
  ``dropout_key`` is passed, so a fixed key makes the network a deterministic
  function (what VAT's clean and perturbed passes need).
  """

  def __init__(self, dropout: bool = True, num_classes: int = 10, *, rngs: nnx.Rngs):
    init = nnx.initializers.glorot_uniform()
    self.conv1 = nnx.Conv(1, 32, (3, 3), padding="VALID", kernel_init=init, rngs=rngs)
    self.conv2 = nnx.Conv(32, 32, (3, 3), padding="VALID", kernel_init=init, rngs=rngs)
    self.hidden = nnx.Linear(12 * 12 * 32, 128, kernel_init=init, rngs=rngs)
    self.out = nnx.Linear(128, num_classes, kernel_init=init, rngs=rngs)
    self.dropout_rates = (0.25, 0.5) if dropout else (0.0, 0.0)

  def __call__(self, x: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
    """``[B, 28, 28, 1]`` float images -> ``[B, classes]`` logits."""
    keys = (None, None) if dropout_key is None else tuple(jax.random.split(dropout_key))
    x = nnx.relu(self.conv2(nnx.relu(self.conv1(x))))
    x = max_pool(x)
    x = _dropout(x.reshape(x.shape[0], -1), self.dropout_rates[0], keys[0])
    x = _dropout(nnx.relu(self.hidden(x)), self.dropout_rates[1], keys[1])
    return self.out(x)

"""VGG-style networks of the mutual-information experiments: IIC heads and the MINE encoder."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import linear

from gapmmd_jax.models._layers import conv_general_dilated, max_pool

WIDTHS = (64, 128, 256, 512)
INITS = ("flax", "official", "keras")
# Per initialisation, (convolution kernels, linear kernels); biases start at zero in all.
# flax: LeCun normal, nnx.Conv's and nnx.Linear's default. official: the official IIC
# networks' (xu-ji/IIC, VGGNet._initialize_weights), He normal (fan in, ReLU gain, not
# truncated) and N(0, 0.01). keras: the Keras book's, he_normal (truncated at two standard
# deviations, as Keras draws it) and Keras Dense's glorot_uniform.
_KERNEL_INITS = {
  "flax": (linear.default_kernel_init, linear.default_kernel_init),
  "official": (
    jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
    jax.nn.initializers.normal(0.01),
  ),
  "keras": (
    jax.nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal"),
    jax.nn.initializers.glorot_uniform(),
  ),
}


def _kernel_inits(init: str) -> tuple[nnx.Initializer, nnx.Initializer]:
  """``(convolution, linear)`` kernel initialisers of ``init`` (one of ``INITS``)."""
  if init not in INITS:
    raise ValueError(f"init must be one of {INITS}, got {init!r}.")
  return _KERNEL_INITS[init]


def linear_head(features: int, outputs: int, init: str, rngs: nnx.Rngs) -> nnx.Linear:
  """A linear layer initialised as ``init`` says (one of ``INITS``)."""
  return nnx.Linear(features, outputs, kernel_init=_kernel_inits(init)[1], rngs=rngs)


class VGGBackbone(nnx.Module):
  """64-M-128-M-256-M-512 (``kernel_size`` square conv, BatchNorm, ReLU; M = max-pool 2),
  flattened: the Keras book's with 3x3 convolutions, the official ClusterNet6c with 5x5.

  ``train=True`` normalises with the batch statistics and updates the running
  ones; ``train=False`` uses the running statistics, unless
  ``batch_statistics=True`` (the official IIC code's evaluation, whose
  BatchNorm keeps no running statistics). ``compute_dtype`` is the dtype the
  convolutions take their inputs and weights in (``jnp.bfloat16`` for bfloat16
  products); parameters, BatchNorm and the output stay float32. ``init``: one of
  ``INITS``, ``"flax"`` (LeCun normal), ``"official"`` (He normal, as the official
  IIC code) or ``"keras"`` (truncated He normal, as the Keras book). BatchNorm's
  ``momentum`` (of the running averages) and ``epsilon``: flax's and PyTorch's 0.9 and
  1e-5 by default, Keras's are 0.99 and 1e-3.
  """

  def __init__(
    self,
    in_channels: int = 1,
    *,
    kernel_size: int = 3,
    init: str = "flax",
    momentum: float = 0.9,
    epsilon: float = 1e-5,
    compute_dtype: jnp.dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    kernel_init = _kernel_inits(init)[0]
    if kernel_size < 1 or kernel_size % 2 == 0:
      raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}.")
    if not (0 <= momentum < 1 and epsilon > 0):
      raise ValueError(f"need 0 <= momentum < 1 and epsilon > 0, got {momentum} and {epsilon}.")
    self.convs = nnx.List(
      [
        nnx.Conv(
          c_in,
          c_out,
          (kernel_size, kernel_size),
          padding="SAME",
          use_bias=False,
          dtype=compute_dtype,
          kernel_init=kernel_init,
          conv_general_dilated=conv_general_dilated,  # fast for kernels larger than the map
          rngs=rngs,
        )
        for c_in, c_out in zip((in_channels, *WIDTHS[:-1]), WIDTHS)
      ]
    )
    self.norms = nnx.List(
      [
        nnx.BatchNorm(c, momentum=momentum, epsilon=epsilon, dtype=jnp.float32, rngs=rngs)
        for c in WIDTHS
      ]
    )

  @staticmethod
  def output_size(input_size: int) -> int:
    """Length of the flattened features for square ``input_size`` images."""
    return (input_size // 8) ** 2 * WIDTHS[-1]

  def __call__(
    self, x: jax.Array, *, train: bool, batch_statistics: bool | None = None
  ) -> jax.Array:
    """``[B, S, S, C]`` -> ``[B, (S / 8)^2 * 512]``; ``batch_statistics`` defaults to ``train``."""
    running = not (train if batch_statistics is None else batch_statistics)
    for index, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      x = nnx.relu(norm(conv(x), use_running_average=running))
      if index < len(self.convs) - 1:
        x = max_pool(x)
    return x.reshape(x.shape[0], -1)


class IICNet(nnx.Module):
  """The backbone, then ``num_heads`` linear heads of ``num_clusters`` and
  ``overcluster_heads`` heads of ``overcluster_clusters`` (``kernel_size``, ``init``,
  ``momentum``, ``epsilon``: as :class:`VGGBackbone`, ``init`` for the heads too)."""

  def __init__(
    self,
    *,
    num_heads: int = 5,
    num_clusters: int = 10,
    overcluster_heads: int = 5,
    overcluster_clusters: int = 50,
    in_channels: int = 1,
    input_size: int = 24,
    kernel_size: int = 3,
    init: str = "flax",
    momentum: float = 0.9,
    epsilon: float = 1e-5,
    compute_dtype: jnp.dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.backbone = VGGBackbone(
      in_channels,
      kernel_size=kernel_size,
      init=init,
      momentum=momentum,
      epsilon=epsilon,
      compute_dtype=compute_dtype,
      rngs=rngs,
    )
    flat = VGGBackbone.output_size(input_size)
    self.heads = nnx.List([linear_head(flat, num_clusters, init, rngs) for _ in range(num_heads)])
    self.overcluster = nnx.List(
      [linear_head(flat, overcluster_clusters, init, rngs) for _ in range(overcluster_heads)]
    )

  def __call__(
    self, x: jax.Array, *, train: bool, batch_statistics: bool | None = None
  ) -> tuple[jax.Array, jax.Array | None]:
    """``[B, 24, 24, C]`` -> ``(logits [heads, B, clusters], over-clustering logits or None)``."""
    x = self.backbone(x, train=train, batch_statistics=batch_statistics)
    main = jnp.stack([head(x) for head in self.heads])
    over = jnp.stack([head(x) for head in self.overcluster]) if len(self.overcluster) else None
    return main, over


class MineEncoder(nnx.Module):
  """The backbone and a dense latent layer, plus MINE's statistics network on latent pairs
  (``init``, ``momentum``, ``epsilon``: as :class:`VGGBackbone`, ``init`` for the dense
  layers too).

  ``T(z, z')`` is ``out(relu(W [z; z'] + b))``. The Keras book builds it as ``Dense(z) +
  Dense(z')``: the same function, but each half of ``W`` initialised as its own ``[L, H]``
  layer and with two biases, each moved by its own Adam step; ``init="keras"`` does both.
  """

  def __init__(
    self,
    *,
    latent_dim: int = 10,
    hidden: int = 1024,
    in_channels: int = 1,
    input_size: int = 24,
    init: str = "flax",
    momentum: float = 0.9,
    epsilon: float = 1e-5,
    compute_dtype: jnp.dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.backbone = VGGBackbone(
      in_channels,
      init=init,
      momentum=momentum,
      epsilon=epsilon,
      compute_dtype=compute_dtype,
      rngs=rngs,
    )
    self.latent = linear_head(VGGBackbone.output_size(input_size), latent_dim, init, rngs)
    linear_init = _kernel_inits(init)[1]
    keras = init == "keras"

    def halves(key, shape, dtype=jnp.float32):  # Keras: one [L, H] Dense per latent
      keys = jax.random.split(key)
      return jnp.concatenate([linear_init(k, (shape[0] // 2, shape[1]), dtype) for k in keys])

    self.statistic_hidden = nnx.Linear(
      2 * latent_dim, hidden, kernel_init=halves if keras else linear_init, rngs=rngs
    )
    self.statistic_bias_other = nnx.Param(jnp.zeros(hidden)) if keras else None
    self.statistic_out = linear_head(hidden, 1, init, rngs)

  def encode(self, x: jax.Array, *, train: bool) -> jax.Array:
    """``[B, 24, 24, C]`` -> ``[B, latent_dim]``."""
    return self.latent(self.backbone(x, train=train))

  def statistic(self, z: jax.Array, z_other: jax.Array) -> jax.Array:
    """``T(z, z_other)``: ``[B, latent]`` twice -> ``[B]``."""
    hidden = self.statistic_hidden(jnp.concatenate([z, z_other], axis=-1))
    if self.statistic_bias_other is not None:
      hidden = hidden + self.statistic_bias_other[...]
    return self.statistic_out(nnx.relu(hidden))[:, 0]

"""VGG-style networks of the mutual-information experiments: IIC heads and the MINE encoder."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import linear

from gapmmd_jax.models._layers import conv_general_dilated, max_pool

WIDTHS = (64, 128, 256, 512)
INITS = ("flax", "official")
# The official IIC networks' initialisation (xu-ji/IIC, VGGNet._initialize_weights): He
# normal convolutions (fan in, ReLU gain, not truncated), linear layers N(0, 0.01), zero biases.
_OFFICIAL_CONV_INIT = jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal")
_OFFICIAL_LINEAR_INIT = jax.nn.initializers.normal(0.01)
_FLAX_KERNEL_INIT = linear.default_kernel_init  # nnx.Conv's and nnx.Linear's default


def _check_init(init: str) -> None:
  if init not in INITS:
    raise ValueError(f"init must be one of {INITS}, got {init!r}.")


def linear_head(features: int, outputs: int, init: str, rngs: nnx.Rngs) -> nnx.Linear:
  """A linear head, initialised as flax's default or the official IIC code's."""
  _check_init(init)
  kernel_init = _FLAX_KERNEL_INIT if init == "flax" else _OFFICIAL_LINEAR_INIT
  return nnx.Linear(features, outputs, kernel_init=kernel_init, rngs=rngs)


class VGGBackbone(nnx.Module):
  """64-M-128-M-256-M-512 (``kernel_size`` square conv, BatchNorm, ReLU; M = max-pool 2),
  flattened: the Keras book's with 3x3 convolutions, the official ClusterNet6c with 5x5.

  ``train=True`` normalises with the batch statistics and updates the running
  ones; ``train=False`` uses the running statistics, unless
  ``batch_statistics=True`` (the official IIC code's evaluation, whose
  BatchNorm keeps no running statistics). ``compute_dtype`` is the dtype the
  convolutions take their inputs and weights in (``jnp.bfloat16`` for bfloat16
  products); parameters, BatchNorm and the output stay float32. ``init``:
  ``"flax"`` (LeCun normal) or ``"official"`` (He normal, as the official code).
  """

  def __init__(
    self,
    in_channels: int = 1,
    *,
    kernel_size: int = 3,
    init: str = "flax",
    compute_dtype: jnp.dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    _check_init(init)
    if kernel_size < 1 or kernel_size % 2 == 0:
      raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}.")
    kernel_init = _FLAX_KERNEL_INIT if init == "flax" else _OFFICIAL_CONV_INIT
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
      [nnx.BatchNorm(c, momentum=0.9, dtype=jnp.float32, rngs=rngs) for c in WIDTHS]
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
  ``overcluster_heads`` heads of ``overcluster_clusters`` (``kernel_size``, ``init``: as
  :class:`VGGBackbone`, ``init`` for the heads too)."""

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
    compute_dtype: jnp.dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.backbone = VGGBackbone(
      in_channels, kernel_size=kernel_size, init=init, compute_dtype=compute_dtype, rngs=rngs
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
  """The backbone and a dense latent layer, plus MINE's statistics network on latent pairs."""

  def __init__(
    self,
    *,
    latent_dim: int = 10,
    hidden: int = 1024,
    in_channels: int = 1,
    input_size: int = 24,
    compute_dtype: jnp.dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.backbone = VGGBackbone(in_channels, compute_dtype=compute_dtype, rngs=rngs)
    self.latent = nnx.Linear(VGGBackbone.output_size(input_size), latent_dim, rngs=rngs)
    self.statistic_hidden = nnx.Linear(2 * latent_dim, hidden, rngs=rngs)
    self.statistic_out = nnx.Linear(hidden, 1, rngs=rngs)

  def encode(self, x: jax.Array, *, train: bool) -> jax.Array:
    """``[B, 24, 24, C]`` -> ``[B, latent_dim]``."""
    return self.latent(self.backbone(x, train=train))

  def statistic(self, z: jax.Array, z_other: jax.Array) -> jax.Array:
    """``T(z, z_other)``: ``[B, latent]`` twice -> ``[B]``."""
    hidden = nnx.relu(self.statistic_hidden(jnp.concatenate([z, z_other], axis=-1)))
    return self.statistic_out(hidden)[:, 0]

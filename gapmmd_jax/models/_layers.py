"""Layers shared by the models."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# nnx.Conv's dimension numbers for 2-D convolutions: NHWC images, HWIO kernels.
_NHWC_HWIO = jax.lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
_DILATIONS = ("lhs_dilation", "rhs_dilation")


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


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides, padding, **kwargs):
  """``jax.lax.conv_general_dilated`` for ``nnx.Conv(conv_general_dilated=...)``, except a 2-D
  "SAME", stride-1, undilated convolution whose odd kernel is larger than the image: that
  one is one matmul over the kernel's shifted slices of the zero-padded image, the same sum.

  XLA's CPU backend takes a slow generic path for such a convolution (ClusterNet6c's 5x5
  kernel on its last 3x3 feature map: 1.5 s forward for 32 images of 256 channels to 512,
  against 21 ms as slices, on 2 cores). ``lhs`` ``[B, H, W, C]``, ``rhs`` ``[k, k, C, O]``.
  """
  undilated = all(tuple(kwargs.get(name) or (1, 1)) == (1, 1) for name in _DILATIONS)
  as_slices = (
    rhs.ndim == 4
    and padding == "SAME"
    and tuple(window_strides) == (1, 1)
    and undilated
    and kwargs.get("dimension_numbers") == _NHWC_HWIO
    and kwargs.get("feature_group_count", 1) == 1
    and kwargs.get("preferred_element_type") is None
    and all(k % 2 == 1 for k in rhs.shape[:2])
    and (rhs.shape[0] > lhs.shape[1] or rhs.shape[1] > lhs.shape[2])
  )
  if not as_slices:
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)
  k_h, k_w = rhs.shape[:2]
  height, width = lhs.shape[1:3]
  padded = jnp.pad(lhs, ((0, 0), (k_h // 2, k_h // 2), (k_w // 2, k_w // 2), (0, 0)))
  columns = jnp.concatenate(
    [padded[:, i : i + height, j : j + width] for i in range(k_h) for j in range(k_w)], axis=-1
  )  # [B, H, W, k_h k_w C], taps in the kernel's row-major order
  return jnp.matmul(columns, rhs.reshape(-1, rhs.shape[-1]), precision=kwargs.get("precision"))

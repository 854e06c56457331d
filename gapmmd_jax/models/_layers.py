"""Layers shared by the models."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# nnx.Conv's dimension numbers for 2-D convolutions: NHWC images, HWIO kernels.
_NHWC_HWIO = jax.lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
_DILATIONS = ("lhs_dilation", "rhs_dilation")


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def max_pool(x: jax.Array, window: int = 2) -> jax.Array:
  """Non-overlapping ``window x window`` max-pool of ``[B, H, W, C]`` -> ``[B, H // w, W // w, C]``.

  The values of ``nnx.max_pool(x, (w, w), strides=(w, w))`` ("VALID": trailing
  rows and columns that do not fill a window are dropped) and its derivative: each
  window's output follows its first maximum (row-major), as XLA's select-and-scatter.
  The maximum is taken over the window's strided slices, and the index of the slice
  that holds it (int8) is what the derivative uses, elementwise: XLA's CPU backend
  lowers the gradient of a windowed max-pool to a select-and-scatter that costs
  10-20x this one. A derivative that compares the input with the pooled maximum
  (``jnp.max``'s) is wrong under ``jit`` after a convolution and BatchNorm: XLA
  computes the two in different fusions, rounded differently, and the comparison
  misses (2026-11-29: 45-55% error in the first blocks' gradients of the IIC
  network; ``tests/models/test_layers.py``). A ``custom_jvp``, so that forward mode
  and derivatives of gradients (VAT's) work too.
  """
  return _max_pool_forward(x, window)[0]


def _max_pool_forward(x: jax.Array, window: int) -> tuple[jax.Array, jax.Array]:
  """``(pooled, index)``, both ``[B, H // w, W // w, C]``: the maximum over the ``w^2``
  strided slices ``x[:, i::w, j::w, :]`` and the row-major position ``i w + j`` of the first
  slice that holds it (int8 for windows up to 11 x 11, else int32)."""
  rows, cols = x.shape[1] // window, x.shape[2] // window
  slices = [
    x[:, i : rows * window : window, j : cols * window : window, :]
    for i in range(window)
    for j in range(window)
  ]
  index_dtype = jnp.int8 if window * window <= 127 else jnp.int32
  best, index = slices[0], jnp.zeros(slices[0].shape, index_dtype)
  for k, candidate in enumerate(slices[1:], start=1):
    better = candidate > best  # ties keep the first; NaN propagates as in jnp.max
    better = better | (jnp.isnan(candidate) & ~jnp.isnan(best))
    best = jnp.where(better, candidate, best)
    index = jnp.where(better, jnp.asarray(k, index_dtype), index)
  return best, index


@max_pool.defjvp
def _max_pool_jvp(window: int, primals, tangents) -> tuple[jax.Array, jax.Array]:
  (x,), (tangent,) = primals, tangents
  pooled, index = _max_pool_forward(x, window)
  batch, _, _, channels = x.shape
  rows, cols = pooled.shape[1], pooled.shape[2]
  # Each window's tangent at its recorded position: [B, R, w, Q, w, C] against [w, w]. Its
  # transpose (the gradient) is one elementwise pass over the input, no scatter.
  windows = tangent[:, : rows * window, : cols * window, :]
  windows = windows.reshape(batch, rows, window, cols, window, channels)
  position = (jnp.arange(window)[:, None] * window + jnp.arange(window)).astype(index.dtype)
  chosen = index[:, :, None, :, None, :] == position[None, None, :, None, :, None]
  return pooled, jnp.sum(jnp.where(chosen, windows, jnp.zeros((), windows.dtype)), axis=(2, 4))


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides, padding, **kwargs):
  """``jax.lax.conv_general_dilated`` for ``nnx.Conv(conv_general_dilated=...)``, except a 2-D
  "SAME", stride-1, undilated convolution whose odd kernel is larger than the image, which is
  one matmul, the same sums:

  - an image of fewer pixels than the kernel has taps: ``[B, H W C] @ [H W C, H W O]``, the
    kernel's taps gathered into the matrix that maps every input pixel to every output pixel
    (``(H W)^2`` products per channel pair instead of the padded ``H W k_h k_w``);
  - otherwise over the kernel's shifted slices of the zero-padded image (im2col).

  XLA's CPU backend takes a slow generic path for such a convolution. ClusterNet6c's 5x5
  kernel on its last 3x3 feature map, 840 images of 256 channels to 512, forward and
  backward on 2 cores: 11.1 s as XLA's convolution, 0.66 s as slices, 0.22 s as one dense
  matrix. ``lhs`` ``[B, H, W, C]``, ``rhs`` ``[k_h, k_w, C, O]``.
  """
  undilated = all(tuple(kwargs.get(name) or (1, 1)) == (1, 1) for name in _DILATIONS)
  as_matmul = (
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
  if not as_matmul:
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)
  precision = kwargs.get("precision")
  k_h, k_w, _, features = rhs.shape
  batch, height, width, _ = lhs.shape
  if height * width < k_h * k_w:
    return jnp.matmul(
      lhs.reshape(batch, -1), _pixel_to_pixel_matrix(rhs, height, width), precision=precision
    ).reshape(batch, height, width, features)
  padded = jnp.pad(lhs, ((0, 0), (k_h // 2, k_h // 2), (k_w // 2, k_w // 2), (0, 0)))
  columns = jnp.concatenate(
    [padded[:, i : i + height, j : j + width] for i in range(k_h) for j in range(k_w)], axis=-1
  )  # [B, H, W, k_h k_w C], taps in the kernel's row-major order
  return jnp.matmul(columns, rhs.reshape(-1, features), precision=precision)


def _pixel_to_pixel_matrix(rhs: jax.Array, height: int, width: int) -> jax.Array:
  """The "SAME" convolution with kernel ``rhs`` ``[k_h, k_w, C, O]`` on ``height x width``
  images as a matrix ``[H W C, H W O]``: input pixel ``(p, q)`` reaches output pixel ``(i, j)``
  through the tap ``(p - i + k_h // 2, q - j + k_w // 2)``, or not at all outside the kernel."""
  k_h, k_w, channels, _ = rhs.shape
  tap_y = np.subtract.outer(np.arange(height), np.arange(height)) + k_h // 2  # [p, i]
  tap_x = np.subtract.outer(np.arange(width), np.arange(width)) + k_w // 2  # [q, j]
  matrix = rhs[
    np.clip(tap_y, 0, k_h - 1)[:, None, :, None], np.clip(tap_x, 0, k_w - 1)[None, :, None, :]
  ]  # [p, q, i, j, C, O]
  in_y, in_x = (tap_y >= 0) & (tap_y < k_h), (tap_x >= 0) & (tap_x < k_w)
  inside = in_y[:, None, :, None] & in_x[None, :, None, :]
  if not inside.all():
    matrix = matrix * jnp.asarray(inside, rhs.dtype)[..., None, None]
  return matrix.transpose(0, 1, 4, 2, 3, 5).reshape(height * width * channels, -1)

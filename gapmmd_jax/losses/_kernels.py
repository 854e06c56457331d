"""Gaussian kernel sums: the hot path behind every MMD estimate.

Squared distances come from the closed form ``|a|^2 + |b|^2 - 2 a b^T`` (one
matmul), never from an ``[n, m, d]`` difference tensor. Large inputs are
processed in row blocks under ``jax.checkpoint`` so that neither the forward
pass nor the gradient holds an ``[n, m]`` matrix.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# Above this many kernel entries the row-block path is used (16 MiB in float32).
_FULL_MATRIX_MAX_ENTRIES = 1 << 22
_DEFAULT_BLOCK_ROWS = 1024
# Tiles of the paired n == m path (rows of x per tile; measured in _paired_block_size).
_PAIRED_SMALL_BLOCK_ROWS, _PAIRED_SMALL_MAX_N, _PAIRED_LARGE_BLOCK_ROWS = 256, 2048, 512
_MEDIAN_MAX_POINTS = 2048


def squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """Pairwise squared Euclidean distances ``[n, m]`` of ``a`` ``[n, d]`` and ``b`` ``[m, d]``."""
  cross = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
  sq = jnp.sum(a * a, axis=1)[:, None] + jnp.sum(b * b, axis=1)[None, :] - 2.0 * cross
  return jnp.maximum(sq, 0.0)


class Kernel(NamedTuple):
  """A weighted sum of Gaussians, ``sum_k weights[k] * exp(-sq_dist * inv_bandwidths[k])``.

  Attributes:
    inv_bandwidths: ``[K]`` reciprocal bandwidths.
    weights: ``[K]`` non-negative weights.
    doubling: a static promise that the weights are all 1 and each bandwidth
      is twice the previous one (the reference ``kernel_mul=2``), so one
      exponential and repeated squaring give every term.
  """

  inv_bandwidths: jax.Array
  weights: jax.Array
  doubling: bool = False


def gaussian_kernel(sq_dists: jax.Array, kernel: Kernel) -> jax.Array:
  """Kernel values of squared distances minus the kernel's peak ``sum(weights)``.

  Every MMD estimate weighs the kernel values with coefficients that sum to
  zero, so this shift changes none of them; it keeps the sums free of a large
  constant and, computed with ``expm1``, accurate for nearby points in float32.

  Returns:
    ``sum_k weights[k] * expm1(-sq_dists * inv_bandwidths[k])``, elementwise.
  """
  num = kernel.inv_bandwidths.shape[0]
  if kernel.doubling:
    # With m = expm1(-s / (2 bw)): expm1(-s / bw) = m (m + 2). Start from the
    # widest bandwidth; min(., 0) also stops XLA from merging the products.
    term = jnp.minimum(jnp.expm1(-sq_dists * kernel.inv_bandwidths[num - 1]), 0.0)
    total = term
    for _ in range(num - 1):
      term = term * (term + 2.0)
      total = total + term
    return total
  total = jnp.zeros_like(sq_dists)
  for k in range(num):
    total = total + kernel.weights[k] * jnp.expm1(-sq_dists * kernel.inv_bandwidths[k])
  return total


def kernel_matrix(a: jax.Array, b: jax.Array, kernel: Kernel) -> jax.Array:
  """The ``[n, m]`` kernel matrix of ``a`` ``[n, d]`` and ``b`` ``[m, d]``, minus its peak."""
  return gaussian_kernel(squared_distances(a, b), kernel)


def is_explicitly_sharded(x: jax.Array) -> bool:
  """Whether ``x`` is split over an explicit mesh axis (known at trace time)."""
  sharding = jax.typeof(x).sharding
  mesh = getattr(sharding, "mesh", None)
  if mesh is None or mesh.empty:
    return False
  explicit = any(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types)
  return explicit and any(axis is not None for axis in sharding.spec)


def _replicated(x: jax.Array) -> jax.Array:
  """``x`` gathered onto every device if it is sharded over an explicit mesh axis.

  Under explicit sharding (e.g. a mesh from ``jax.make_mesh``) a product of two
  row-sharded operands is illegal, so the column operand of a block is
  replicated; under automatic sharding XLA decides and this is a no-op.
  """
  if is_explicitly_sharded(x):
    mesh = jax.typeof(x).sharding.mesh
    return jax.sharding.reshard(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  return x


def kernel_sum(a: jax.Array, b: jax.Array, kernel: Kernel, *,
               block_size: int | None = None) -> jax.Array:
  """``sum_ij (k(a_i, b_j) - peak)`` without materialising ``[n, m]`` for large inputs.

  Args:
    a: ``[n, d]``.
    b: ``[m, d]``.
    kernel: the kernel.
    block_size: rows of ``a`` per block; ``None`` picks the full matrix when it
      has at most 4M entries, else blocks of 1024 rows.

  Returns:
    Scalar sum.
  """
  n, m = a.shape[0], b.shape[0]
  block_size = _choose_block_size(n, m, block_size)
  if block_size >= n:
    return jnp.sum(kernel_matrix(a, _replicated(b), kernel))
  b = _replicated(b)
  num_blocks = math.ceil(n / block_size)
  pad = num_blocks * block_size - n
  # Block j holds rows j, j + num_blocks, ...: the block axis is built from the
  # minor part of the row index, so rows sharded over devices stay sharded
  # within each block and the scanned axis is never sharded.
  blocks = jnp.pad(a, ((0, pad), (0, 0))).reshape(block_size, num_blocks, a.shape[1])
  blocks = jnp.swapaxes(blocks, 0, 1)
  masks = (jnp.arange(num_blocks * block_size) < n).reshape(block_size, num_blocks).T

  @jax.checkpoint
  def block_sum(block_and_mask):
    block, mask = block_and_mask
    k = kernel_matrix(block, b, kernel)
    return jnp.sum(jnp.where(mask[:, None], k, 0.0))

  return jnp.sum(jax.lax.map(block_sum, (blocks, masks)))


def _choose_block_size(n: int, m: int, block_size: int | None) -> int:
  if block_size is None:
    return n if n * m <= _FULL_MATRIX_MAX_ENTRIES else _DEFAULT_BLOCK_ROWS
  return block_size


def _sum_upper_tiles(arrays: tuple[jax.Array, ...], block_size: int, tile_fn):
  """Sums ``tile_fn`` over the tiles ``I <= J`` of row-aligned ``[n, d]`` arrays.

  ``tile_fn(rows_I, rows_J, mask)`` gets, for each array, its rows of tile
  ``I`` and of tile ``J`` (padded to ``block_size``) and the ``[bs, bs]`` mask
  of real pairs (``None`` when ``block_size`` divides ``n``: no padding), and
  returns a tuple of sums; tiles ``I < J`` count twice. Each tile runs under
  ``jax.checkpoint``, so the gradient keeps no tile.
  """
  n = arrays[0].shape[0]
  num_blocks = math.ceil(n / block_size)
  pad = ((0, num_blocks * block_size - n), (0, 0))
  padded = tuple(jnp.pad(a, pad) for a in arrays)
  valid = jnp.arange(num_blocks * block_size) < n
  rows, cols = np.triu_indices(num_blocks)

  @jax.checkpoint
  def one_tile(pair):
    i, j = pair
    take = lambda a, k: jax.lax.dynamic_slice_in_dim(a, k * block_size, block_size)
    mask = take(valid, i)[:, None] & take(valid, j)[None, :] if pad[0][1] else None
    sums = tile_fn(tuple(take(a, i) for a in padded), tuple(take(a, j) for a in padded), mask)
    return tuple(jnp.where(i == j, 1.0, 2.0) * total for total in sums)

  if num_blocks == 1:
    return one_tile((0, 0))
  return tuple(jnp.sum(t) for t in jax.lax.map(one_tile, (jnp.asarray(rows), jnp.asarray(cols))))


def self_kernel_sum(a: jax.Array, kernel: Kernel, *, block_size: int | None = None) -> jax.Array:
  """``sum_ij (k(a_i, a_j) - peak)`` from the tiles on and above the diagonal only.

  The kernel matrix is symmetric, so each off-diagonal tile ``(I, J)``,
  ``I < J``, is computed once and counted twice: ``nb (nb + 1) / 2`` tiles
  instead of ``nb^2``. Rows sharded over an explicit mesh take the row-block
  path of :func:`kernel_sum` instead, so every device works on its own rows.

  Args:
    a: ``[n, d]``.
    kernel: the kernel.
    block_size: tile side; ``None`` as in :func:`kernel_sum`.

  Returns:
    Scalar sum.
  """
  n = a.shape[0]
  block_size = _choose_block_size(n, n, block_size)
  if block_size >= n or is_explicitly_sharded(a):
    return kernel_sum(a, a, kernel, block_size=block_size)

  def tile(rows_i, rows_j, mask):
    return (_masked_sum(kernel_matrix(rows_i[0], rows_j[0], kernel), mask),)

  return _sum_upper_tiles((a,), block_size, tile)[0]


def _masked_sum(values: jax.Array, mask: jax.Array | None) -> jax.Array:
  return jnp.sum(values if mask is None else jnp.where(mask, values, 0.0))


def _paired_block_size(n: int, block_size: int | None) -> int:
  """Tile side of :func:`paired_mmd_sums`, never more than ``n``: 256 rows up to
  ``n = 2048`` (the stacked ``[512, 512]`` kernel tile, 1 MiB, stays in a
  core's L2 cache), 512 beyond (fewer tiles; measured fastest from n = 4096)."""
  if block_size is None:
    block_size = _PAIRED_SMALL_BLOCK_ROWS if n <= _PAIRED_SMALL_MAX_N else _PAIRED_LARGE_BLOCK_ROWS
  return min(block_size, n)


def paired_mmd_sums(x: jax.Array, y: jax.Array, kernel: Kernel, *,
                    block_size: int | None = None) -> tuple[jax.Array, jax.Array]:
  """For ``n == m``: ``sum_ij h_ij`` and ``sum_ij k(x_i, y_j)``, tile by tile.

  ``h_ij = k(x_i, x_j) + k(y_i, y_j) - k(x_i, y_j) - k(y_i, x_j)`` is reduced
  as one quantity, so the near-equal within- and between-sample sums cancel
  before float32 rounding rather than after (the biased MMD^2 is
  ``sum h / n^2``). ``h`` is symmetric, so only the tiles ``I <= J`` are
  computed (``I < J`` count twice), each from one matmul of the stacked rows
  ``[x_I; y_I]`` and ``[x_J; y_J]``.

  Args:
    x, y: ``[n, d]`` each.
    kernel: the kernel.
    block_size: rows of ``x`` (and of ``y``) per tile; ``None``: 256 up to
      ``n = 2048``, else 512.

  Returns:
    ``(sum_h, sum_xy)``, two scalars (of peak-shifted kernel values).
  """
  b = _paired_block_size(x.shape[0], block_size)

  def tile(rows_i, rows_j, mask):
    k = kernel_matrix(jnp.concatenate(rows_i), jnp.concatenate(rows_j), kernel)
    if mask is not None:
      k = jnp.where(jnp.tile(mask, (2, 2)), k, 0.0)
    kxx, kxy, kyx, kyy = k[:b, :b], k[:b, b:], k[b:, :b], k[b:, b:]
    return jnp.sum(kxx + kyy - kxy - kyx), 0.5 * (jnp.sum(kxy) + jnp.sum(kyx))

  return _sum_upper_tiles((x, y), b, tile)


def mean_squared_distance(z: jax.Array) -> jax.Array:
  """Mean of ``|z_i - z_j|^2`` over ordered pairs ``i != j``, in ``O(N d)``.

  ``sum_ij |z_i - z_j|^2 = 2 N sum_i |z_i - mean|^2``; centring first keeps the
  float32 result accurate when the data sit far from the origin.
  """
  n = z.shape[0]
  centred = z - jnp.mean(z, axis=0)
  return 2.0 * n * jnp.sum(centred * centred) / (float(n) * n - n)  # float: no int32 overflow


def median_squared_distance(z: jax.Array) -> jax.Array:
  """Median of ``|z_i - z_j|^2`` over pairs ``i < j``.

  Uses every point up to 2048 points, else an evenly strided subset of 2048
  (deterministic), so the cost stays bounded.
  """
  n = z.shape[0]
  if n > _MEDIAN_MAX_POINTS:
    z = z[:: math.ceil(n / _MEDIAN_MAX_POINTS)]
    n = z.shape[0]
  centred = z - jnp.mean(z, axis=0)
  sq = squared_distances(centred, centred)
  rows, cols = jnp.triu_indices(n, k=1)
  return jnp.median(sq[rows, cols])

"""Gaussian kernel sums: the hot path behind every MMD estimate.

Squared distances come from the closed form ``|a|^2 + |b|^2 - 2 a b^T`` (one
matmul), never from an ``[n, m, d]`` difference tensor, and no path holds an
``[n, m]`` matrix for large inputs: the MMD estimates walk the tiles on and
above the diagonal; rows sharded over an explicit mesh take row blocks under
``jax.checkpoint`` (:func:`kernel_sum`), and the two-sample tests' walks split
their tiles over the mesh's devices (:func:`_sum_upper_tiles`). The symmetric
tile walks (:func:`paired_mmd_statistic`, :func:`pooled_mmd_statistic`) have a
gradient of their own that walks the same tiles
(:func:`_tile_value_and_cotangents`).
"""

from __future__ import annotations

import functools
import math
import operator
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
_QUADRATIC_BLOCK_ROWS = 512
_BANK_BLOCK_ROWS = 256
# Stacked rows per tile of the gradient walk, by feature dimension (measured on 2 CPU cores,
# README "MMD at scale"): 256 for 128 < d <= 512, where the tile and its [rows, d] operands
# then stay in cache; else 512.
_GRADIENT_TILE_ROWS, _GRADIENT_TILE_ROWS_MID_D = 512, 256


def _gradient_tile_rows(d: int) -> int:
  return _GRADIENT_TILE_ROWS_MID_D if 128 < d <= 512 else _GRADIENT_TILE_ROWS


def squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """Pairwise squared Euclidean distances ``[n, m]`` of ``a`` ``[n, d]`` and ``b`` ``[m, d]``."""
  cross = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
  sq = jnp.sum(a * a, axis=1)[:, None] + jnp.sum(b * b, axis=1)[None, :] - 2.0 * cross
  return jnp.maximum(sq, 0.0)


class Kernel(NamedTuple):
  """A weighted sum of Gaussians, ``sum_k weights[k] * exp(-sq_dist * inv_scale *
  inv_bandwidths[k])``.

  Attributes:
    inv_bandwidths: ``[K]`` reciprocal bandwidths (relative ones when ``inv_scale`` is set).
    weights: ``[K]`` non-negative weights.
    doubling: a static promise that the weights are all 1 and each bandwidth
      is twice the previous one (the reference ``kernel_mul=2``), so one
      exponential and repeated squaring give every term.
    inv_scale: a scalar common to every reciprocal bandwidth, or ``None`` (1): a
      data-driven scale kept apart, so its gradient is one sum per tile, not ``K``.
  """

  inv_bandwidths: jax.Array
  weights: jax.Array
  doubling: bool = False
  inv_scale: jax.Array | None = None

  def scaled_inv_bandwidths(self) -> jax.Array:
    """``[K]`` reciprocal bandwidths, the scale applied."""
    return self.inv_bandwidths if self.inv_scale is None else self.inv_scale * self.inv_bandwidths


def gaussian_kernel(sq_dists: jax.Array, kernel: Kernel) -> jax.Array:
  """Kernel values of squared distances minus the kernel's peak ``sum(weights)``.

  Every MMD estimate weighs the kernel values with coefficients that sum to
  zero, so this shift changes none of them; it keeps the sums free of a large
  constant and, computed with ``expm1``, accurate for nearby points in float32.

  Returns:
    ``sum_k weights[k] * expm1(-sq_dists * s_k)``, elementwise, with ``s =
    kernel.scaled_inv_bandwidths()``.
  """
  shifted = _shifted_terms(sq_dists, kernel.scaled_inv_bandwidths(), kernel.doubling)
  if kernel.doubling:
    return functools.reduce(operator.add, shifted)
  return functools.reduce(operator.add, [w * term for w, term in zip(kernel.weights, shifted)])


def _shifted_terms(
  sq_dists: jax.Array, inv_bandwidths: jax.Array, doubling: bool
) -> list[jax.Array]:
  """``[expm1(-sq_dists * inv_bandwidths[k]) for k]``: each Gaussian minus its peak."""
  num = inv_bandwidths.shape[0]
  if not doubling:
    return [jnp.expm1(-sq_dists * inv_bandwidths[k]) for k in range(num)]
  # With m = expm1(-s / (2 bw)): expm1(-s / bw) = m (m + 2). Start from the
  # widest bandwidth; min(., 0) also stops XLA from merging the products.
  terms = [jnp.minimum(jnp.expm1(-sq_dists * inv_bandwidths[num - 1]), 0.0)]
  for _ in range(num - 1):
    terms.append(terms[-1] * (terms[-1] + 2.0))
  return terms[::-1]


def kernel_matrix(a: jax.Array, b: jax.Array, kernel: Kernel) -> jax.Array:
  """The ``[n, m]`` kernel matrix of ``a`` ``[n, d]`` and ``b`` ``[m, d]``, minus its peak."""
  return gaussian_kernel(squared_distances(a, b), kernel)


def self_kernel_matrix(a: jax.Array, kernel: Kernel) -> jax.Array:
  """``kernel_matrix(a, a, kernel)`` ``[n, n]`` with its diagonal exactly 0 (see below)."""
  return _without_self_pairs(kernel_matrix(a, a, kernel), True)


def is_explicitly_sharded(x: jax.Array) -> bool:
  """Whether ``x`` is split over an explicit mesh axis (known at trace time)."""
  sharding = jax.typeof(x).sharding
  mesh = getattr(sharding, "mesh", None)
  if mesh is None or mesh.empty:
    return False
  explicit = any(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types)
  return explicit and any(axis is not None for axis in sharding.spec)


def explicit_mesh(*arrays: jax.Array):
  """The mesh that the first of ``arrays`` split over an explicit mesh axis is split over
  (an abstract mesh under ``jit``), or ``None`` when none is."""
  for x in arrays:
    if is_explicitly_sharded(x):
      return jax.typeof(x).sharding.mesh
  return None


def replicated(x: jax.Array) -> jax.Array:
  """``x`` gathered onto every device if it is sharded over an explicit mesh axis.

  Under explicit sharding (e.g. a mesh from ``jax.make_mesh``) a product of two
  row-sharded operands is illegal, so the column operand of a block is
  replicated; under automatic sharding XLA decides and this is a no-op.
  """
  if is_explicitly_sharded(x):
    mesh = jax.typeof(x).sharding.mesh
    return jax.sharding.reshard(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  return x


def kernel_sum(
  a: jax.Array, b: jax.Array, kernel: Kernel, *, block_size: int | None = None
) -> jax.Array:
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
    return jnp.sum(kernel_matrix(a, replicated(b), kernel))
  b = replicated(b)
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


class _Wanted(NamedTuple):
  """Which gradients the tile walk forms (the inputs that are differentiated)."""

  rows: bool
  scale: bool
  bandwidths: bool
  weights: bool


def _tile_value_and_cotangents(
  p: jax.Array,
  q: jax.Array,
  inv_scale: jax.Array,
  inv_bandwidths: jax.Array,
  weights: jax.Array,
  doubling: bool,
  coef: jax.Array,
  wanted: _Wanted,
  symmetric: bool = False,
):
  """``S = sum(coef * (kernel_matrix(p, q) - peak))`` for one tile, with its gradients.

  With ``D`` the squared distances, ``s_k = inv_scale * r_k`` (``r =
  inv_bandwidths``) and ``e_k = exp(-s_k D)``: ``dS/dD = -coef * sum_k w_k s_k
  e_k = inv_scale * G`` with ``G = -coef * sum_k w_k r_k e_k``, so ``dS/dp =
  2 inv_scale (p * G 1 - G q)`` and ``dS/dq = 2 inv_scale (q * G^T 1 - G^T p)``
  (two matmuls, each with a column of ones for the row sums); ``dS/dinv_scale
  = sum(G D)``, ``dS/dr_k = -inv_scale w_k sum(coef D e_k)``, ``dS/dw_k =
  sum(coef (e_k - 1))``. All the tile's sums are reduced together, in one
  pass. Entries whose distance rounds to <= 0 (a point and itself) have zero
  gradient. Only the ``wanted`` gradients are formed.

  Args:
    p: ``[P, d]``, q: ``[Q, d]`` rows.
    coef: ``[P, Q]`` weight of each kernel entry in ``S`` (0 on excluded pairs).
    symmetric: a static promise that ``q`` is ``p`` and ``coef`` symmetric, so ``G``
      is symmetric and ``dS/dq = dS/dp`` (one matmul fewer).

  Returns:
    ``(sums, dS/dp [P, d], dS/dq [Q, d])``: ``sums`` is ``[S, dS/dinv_scale, dS/dr_1..K,
    dS/dw_1..K]``, the last three only where wanted; the row gradients are ``None``
    unless wanted.
  """
  matmul = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)
  sq = jnp.sum(p * p, axis=1)[:, None] + jnp.sum(q * q, axis=1)[None, :] - 2.0 * matmul(p, q.T)
  coef = jnp.where(sq > 0, coef, 0.0)
  sq = jnp.maximum(sq, 0.0)
  shifted = _shifted_terms(sq, inv_scale * inv_bandwidths, doubling)
  num = len(shifted)
  total = sum(shifted) if doubling else sum(weights[k] * shifted[k] for k in range(num))
  summands = [coef * total]
  # G = d(tile sum) / d(sq), formed only for the rows' and the scale's gradients.
  g = jnp.zeros((), sq.dtype)
  if wanted.rows or wanted.scale:
    g = -coef * sum(weights[k] * inv_bandwidths[k] * (shifted[k] + 1.0) for k in range(num))
  if wanted.scale:
    summands.append(g * sq)
  if wanted.bandwidths:
    summands += [coef * sq * (term + 1.0) for term in shifted]
  if wanted.weights:
    summands += [coef * term for term in shifted]
  sums = jnp.sum(jnp.stack(summands), axis=(1, 2))
  if wanted.bandwidths:
    at = 1 + wanted.scale
    sums = sums.at[at : at + num].multiply(-inv_scale * weights)
  dp = dq = None
  if wanted.rows:
    ones = jnp.ones((p.shape[0], 1), p.dtype)
    g_q = matmul(g, jnp.concatenate([q, ones], axis=1))  # [P, d + 1]: G q and G 1
    dp = 2.0 * inv_scale * (p * g_q[:, -1:] - g_q[:, :-1])
    if symmetric:
      return sums, dp, dp
    # G^T p as (p^T G)^T: XLA's CPU dot is several times faster in this orientation.
    gt_p = jax.lax.optimization_barrier(matmul(jnp.concatenate([p, ones], axis=1).T, g)).T
    dq = 2.0 * inv_scale * (q * gt_p[:, -1:] - gt_p[:, :-1])
  return sums, dp, dq


def _symmetric_tile_sums(
  arrays: tuple[jax.Array, ...],
  kernel: Kernel,
  block_size: int,
  tile_fn,
  combination: tuple[float, ...],
  coefficients: tuple,
  features: tuple[jax.Array, ...] = (),
  gradient_block_size: int | None = None,
) -> jax.Array:
  """``sum_o combination[o] * _sum_upper_tiles(arrays + features, block_size, tile_fn)[o]``,
  with a gradient that walks the same tiles.

  The kernel entry between row ``i`` of array ``r`` and row ``j`` of array ``s``
  counts ``f_ri^T W f_sj`` times, self pairs excluded: ``W = coefficients``
  (static, ``[L, L]``), ``f`` the rows of ``features[r]`` (``[n, L]`` each, zero
  on rows that do not count), or, without ``features``, the one-hot vector of
  the array's index (``L = R = len(arrays)``, so ``W`` weighs whole arrays);
  ``tile_fn(..., kernel=, coefficients=)`` must compute exactly that. Under
  differentiation one pass computes the value and its gradient together, in
  tiles of ``gradient_block_size`` rows per array (``None``: 256 or 512 stacked
  rows by ``d``, ``_gradient_tile_rows``, so the tile's elementwise passes stay
  in cache): per tile the distances (one matmul), the exponentials, one
  reduction of every wanted sum, and two matmuls with the tile's coefficients
  (one on diagonal tiles, whose ``G`` is symmetric), the rows' gradients
  accumulated in ``O(n d)``; the backward pass only scales them. Without
  differentiation the forward pass is ``_sum_upper_tiles`` unchanged.
  """
  inv_scale = jnp.ones((), arrays[0].dtype) if kernel.inv_scale is None else kernel.inv_scale
  n, d = arrays[0].shape
  gradient_block_size = min(n, gradient_block_size or max(1, _gradient_tile_rows(d) // len(arrays)))
  return _symmetric_statistic(
    arrays,
    tuple(features),
    inv_scale,
    kernel.inv_bandwidths,
    kernel.weights,
    kernel.doubling,
    block_size,
    gradient_block_size,
    tile_fn,
    combination,
    coefficients,
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8, 9, 10))
def _symmetric_statistic(
  arrays,
  features,
  inv_scale,
  inv_bandwidths,
  weights,
  doubling,
  block_size,
  gradient_block_size,
  tile_fn,
  combination,
  coefficients,
):
  del gradient_block_size
  kernel = Kernel(inv_bandwidths, weights, doubling, inv_scale)
  sums = _sum_upper_tiles(
    arrays + features,
    block_size,
    functools.partial(tile_fn, kernel=kernel, coefficients=coefficients),
  )
  return sum(c * total for c, total in zip(combination, sums) if c)


def _symmetric_statistic_fwd(
  arrays,
  features,
  inv_scale,
  inv_bandwidths,
  weights,
  doubling,
  block_size,
  gradient_block_size,
  tile_fn,
  combination,
  coefficients,
):
  """The value and its wanted gradients in one walk over the tiles ``I <= J``."""
  del block_size, tile_fn, combination
  wanted = _Wanted(
    any(a.perturbed for a in arrays),
    inv_scale.perturbed,
    inv_bandwidths.perturbed,
    weights.perturbed,
  )
  arrays, features = tuple(a.value for a in arrays), tuple(f.value for f in features)
  features_given = len(features)
  inv_scale, inv_bandwidths, weights = inv_scale.value, inv_bandwidths.value, weights.value
  num_arrays, (n, d) = len(arrays), arrays[0].shape
  dtype = arrays[0].dtype
  if not features:  # one-hot: each array's rows weighed as a whole
    features = tuple(
      jnp.broadcast_to(jnp.eye(num_arrays, dtype=dtype)[r], (n, num_arrays))
      for r in range(num_arrays)
    )
  b = gradient_block_size
  num_blocks = math.ceil(n / b)
  pad = lambda a: jnp.pad(a, ((0, num_blocks * b - n), (0, 0)))  # padded rows: zero features
  padded = jnp.stack([pad(a) for a in arrays])  # [R, nb b, d]
  padded_features = jnp.stack([pad(f.astype(dtype)) for f in features])  # [R, nb b, L]
  w = jnp.asarray(coefficients, dtype)
  eye = jnp.eye(num_arrays * b, dtype=bool)
  rows, cols = np.triu_indices(num_blocks)

  def take(k):  # the rows of tile k of every array, stacked: [R b, d], and their features
    block = lambda a: jax.lax.dynamic_slice_in_dim(a, k * b, b, axis=1)
    return (
      block(padded).reshape(num_arrays * b, d),
      block(padded_features).reshape(num_arrays * b, -1),
    )

  def add(grads, k, rows_grad):
    block = jax.lax.dynamic_slice_in_dim(grads, k * b, b, axis=1)
    return jax.lax.dynamic_update_slice_in_dim(
      grads, block + rows_grad.reshape(num_arrays, b, d), k * b, axis=1
    )

  def one_tile(carry, pair, diagonal: bool):
    grads, sums = carry
    i, j = pair
    (zi, fi), (zj, fj) = take(i), take(j)
    coef = fi @ w @ fj.T
    # Diagonal tiles: self pairs out, and G symmetric, so one matmul serves both sides.
    coef = jnp.where(eye, 0.0, coef) if diagonal else 2.0 * coef
    tile_sums, dzi, dzj = _tile_value_and_cotangents(
      zi, zj, inv_scale, inv_bandwidths, weights, doubling, coef, wanted, symmetric=diagonal
    )
    if wanted.rows:
      grads = add(add(grads, i, dzi), j, dzj)
    return (grads, sums + tile_sums), None

  num_sums = 1 + wanted.scale + inv_bandwidths.shape[0] * (wanted.bandwidths + wanted.weights)
  carry = (jnp.zeros_like(padded) if wanted.rows else None, jnp.zeros((num_sums,), padded.dtype))
  if num_blocks == 1:
    carry, _ = one_tile(carry, (0, 0), True)
  else:
    diagonal = jnp.arange(num_blocks)
    carry, _ = jax.lax.scan(functools.partial(one_tile, diagonal=True), carry, (diagonal, diagonal))
    upper = rows < cols
    carry, _ = jax.lax.scan(
      functools.partial(one_tile, diagonal=False),
      carry,
      (jnp.asarray(rows[upper]), jnp.asarray(cols[upper])),
    )
  grads, sums = carry
  num = inv_bandwidths.shape[0]
  at = 1 + wanted.scale
  residuals = (
    tuple(grads[r, :n] if wanted.rows else None for r in range(num_arrays)),
    (None,) * features_given,  # their (zero) cotangents
    sums[1] if wanted.scale else None,
    sums[at : at + num] if wanted.bandwidths else None,
    sums[at + num * wanted.bandwidths :] if wanted.weights else None,
  )
  return sums[0], residuals


def _symmetric_statistic_bwd(
  doubling,
  block_size,
  gradient_block_size,
  tile_fn,
  combination,
  coefficients,
  residuals,
  cotangent,
):
  del doubling, block_size, gradient_block_size, tile_fn, combination, coefficients
  rows, features, d_scale, d_inv, d_weights = residuals
  scaled = lambda g: None if g is None else cotangent * g  # None: not differentiated
  return (
    tuple(scaled(g) for g in rows),
    features,
    scaled(d_scale),
    scaled(d_inv),
    scaled(d_weights),
  )


_symmetric_statistic.defvjp(_symmetric_statistic_fwd, _symmetric_statistic_bwd, symbolic_zeros=True)


def _sum_upper_tiles(arrays: tuple[jax.Array, ...], block_size: int, tile_fn, mesh=None):
  """Sums ``tile_fn`` over the tiles ``I <= J`` of row-aligned ``[n, d]`` arrays.

  ``tile_fn(rows_I, rows_J, mask, diagonal)`` gets, for each array, its rows of
  tile ``I`` and of tile ``J`` (padded to ``block_size``), the ``[bs, bs]`` mask
  of real pairs (``None`` when ``block_size`` divides ``n``: no padding) and
  whether ``I == J`` (a traced bool), and returns a tuple of sums (scalars or
  arrays of a fixed shape, summed over the tiles); tiles ``I < J`` count
  twice. The forward pass of :func:`_symmetric_tile_sums`, whose
  gradient walks the tiles itself; each tile also runs under ``jax.checkpoint``,
  so differentiating this function directly keeps no tile either.

  With a ``mesh`` (from :func:`explicit_mesh`) of several devices, the list of
  tiles is split into equal contiguous parts, one per device (``shard_map``
  over all the mesh's axes, the arrays replicated), and the devices' sums are
  added with one ``psum``: each device computes ``1 / devices`` of the tiles.
  """
  n = arrays[0].shape[0]
  num_blocks = math.ceil(n / block_size)
  pad = ((0, num_blocks * block_size - n), (0, 0))
  padded = tuple(jnp.pad(a, pad) for a in arrays)
  valid = jnp.arange(num_blocks * block_size) < n
  rows, cols = np.triu_indices(num_blocks)

  def tile_sums(tile_fn):
    @jax.checkpoint
    def one_tile(padded, valid, pair):
      i, j, weight = pair  # weight: 1 on the diagonal, 2 above it (0 for a padding pair)
      take = lambda a, k: jax.lax.dynamic_slice_in_dim(a, k * block_size, block_size)
      mask = take(valid, i)[:, None] & take(valid, j)[None, :] if pad[0][1] else None
      sums = tile_fn(
        tuple(take(a, i) for a in padded), tuple(take(a, j) for a in padded), mask, i == j
      )
      return tuple(jnp.asarray(weight, total.dtype) * total for total in sums)

    return one_tile

  if num_blocks == 1:
    return tile_sums(tile_fn)(padded, valid, (0, 0, 1.0))

  def accumulate(one_tile, padded, valid, pairs):
    """The tiles' sums, accumulated so that memory does not grow with the tiles."""
    shapes = jax.eval_shape(one_tile, padded, valid, jax.tree.map(lambda a: a[0], pairs))
    zeros = tuple(jnp.zeros(shape.shape, shape.dtype) for shape in shapes)
    step = lambda acc, pair: (
      tuple(a + t for a, t in zip(acc, one_tile(padded, valid, pair))),
      None,
    )
    return jax.lax.scan(step, zeros, pairs)[0]

  weights = np.where(rows == cols, 1.0, 2.0)
  if mesh is not None and mesh.size > 1:
    # Equal contiguous parts of the tile list, one per device; padding pairs weigh 0.
    fill = math.ceil(len(rows) / mesh.size) * mesh.size - len(rows)
    pairs = tuple(jnp.asarray(np.pad(a, (0, fill))) for a in (rows, cols, weights))
    axes = tuple(mesh.axis_names)
    split, whole = jax.sharding.PartitionSpec(axes), jax.sharding.PartitionSpec()
    pairs = jax.sharding.reshard(pairs, jax.sharding.NamedSharding(mesh, split))
    # shard_map takes no closed-over arrays under explicit sharding: the arrays inside
    # tile_fn (a jax.tree_util.Partial: bandwidths and such) travel as arguments.
    leaves, treedef = jax.tree.flatten(tile_fn)
    hoisted = [k for k, leaf in enumerate(leaves) if isinstance(leaf, jax.Array)]

    def local(padded, valid, pairs, hoisted_leaves):
      leaves_here = list(leaves)
      for k, leaf in zip(hoisted, hoisted_leaves):
        leaves_here[k] = leaf
      one_tile = tile_sums(jax.tree.unflatten(treedef, leaves_here))
      return jax.lax.psum(accumulate(one_tile, padded, valid, pairs), axes)

    return jax.shard_map(
      local, mesh=mesh, in_specs=(whole, whole, split, whole), out_specs=whole, check_vma=False
    )(
      tuple(replicated(a) for a in padded),
      replicated(valid),
      pairs,
      [replicated(leaves[k]) for k in hoisted],
    )
  one_tile = tile_sums(tile_fn)
  pairs = tuple(jnp.asarray(a) for a in (rows, cols, weights))
  shapes = jax.eval_shape(one_tile, padded, valid, jax.tree.map(lambda a: a[0], pairs))
  if all(shape.ndim == 0 for shape in shapes):  # scalars: keep them all, sum as a tree
    return tuple(jnp.sum(t) for t in jax.lax.map(functools.partial(one_tile, padded, valid), pairs))
  return accumulate(one_tile, padded, valid, pairs)


def pooled_mmd_statistic(
  x: jax.Array,
  y: jax.Array,
  kernel: Kernel,
  *,
  xx_weight: float,
  yy_weight: float,
  xy_weight: float,
  block_size: int | None = None,
) -> jax.Array:
  """``xx_weight * Sxx + yy_weight * Syy + xy_weight * Sxy`` (``S`` the kernel sums, self
  pairs excluded) from the upper tiles of the pooled ``[x; y]`` only.

  For ``n != m``: each tile ``(I, J)``, ``I <= J``, of the pooled kernel matrix
  is computed once (``I < J`` count twice) and weighed per entry by which
  samples its row and column come from, so the three sums are combined within
  the tile, before float32 rounding: ``(n + m)^2 / 2`` entries in all.

  Args:
    x: ``[n, d]``, y: ``[m, d]``.
    kernel: the kernel.
    xx_weight, yy_weight, xy_weight: the sums' coefficients (static; an estimator's).
    block_size: tile side in pooled rows; ``None``: 512 up to ``n + m = 2048``, else
      1024 (the stacked tile sides of :func:`paired_mmd_statistic`, not measured for this
      path); the gradient's walk takes :func:`_gradient_tile_rows`.

  Returns:
    Scalar (of peak-shifted kernel values).
  """
  n, m = x.shape[0], y.shape[0]
  pooled = jnp.concatenate([x, y])
  features = jnp.concatenate(
    [
      jnp.tile(jnp.asarray([[1.0, 0.0]], x.dtype), (n, 1)),
      jnp.tile(jnp.asarray([[0.0, 1.0]], x.dtype), (m, 1)),
    ]
  )
  coefficients = ((xx_weight, 0.5 * xy_weight), (0.5 * xy_weight, yy_weight))
  side = block_size or 2 * _paired_block_size(n + m, None)
  return _symmetric_tile_sums(
    (pooled,),
    kernel,
    min(side, n + m),
    _weighted_tile,
    (1.0,),
    coefficients,
    (features,),
    gradient_block_size=block_size,
  )


def _weighted_tile(rows_i, rows_j, mask, diagonal, *, kernel: Kernel, coefficients: tuple):
  del mask  # padded rows have zero features
  (zi, fi), (zj, fj) = rows_i, rows_j  # [bs, d] points and [bs, L] features
  k = _without_self_pairs(kernel_matrix(zi, zj, kernel), diagonal)
  return (jnp.sum(k * (fi @ jnp.asarray(coefficients, k.dtype) @ fj.T)),)


def _without_self_pairs(k: jax.Array, diagonal: jax.Array | bool) -> jax.Array:
  """``k`` with its diagonal set to exactly 0 (the shifted ``k(a, a)``) if ``diagonal``.

  The one-matmul distance of a point to itself is a rounding error of order
  ``eps |a|^2``, which a narrow bandwidth turns into a visible kernel error.
  """
  eye = jnp.eye(k.shape[0], k.shape[1], dtype=bool)
  return jnp.where(eye & diagonal, 0.0, k)


def _paired_block_size(n: int, block_size: int | None) -> int:
  """Tile side of :func:`paired_mmd_statistic`, never more than ``n``: 256 rows up to
  ``n = 2048`` (the stacked ``[512, 512]`` kernel tile, 1 MiB, stays in a
  core's L2 cache), 512 beyond (fewer tiles; measured fastest from n = 4096)."""
  if block_size is None:
    block_size = _PAIRED_SMALL_BLOCK_ROWS if n <= _PAIRED_SMALL_MAX_N else _PAIRED_LARGE_BLOCK_ROWS
  return min(block_size, n)


def paired_mmd_statistic(
  x: jax.Array,
  y: jax.Array,
  kernel: Kernel,
  *,
  h_weight: float,
  xy_weight: float,
  block_size: int | None = None,
) -> jax.Array:
  """For ``n == m``: ``h_weight * sum_ij h_ij + xy_weight * sum_ij k(x_i, y_j)``, tile by tile.

  ``h_ij = k(x_i, x_j) + k(y_i, y_j) - k(x_i, y_j) - k(y_i, x_j)`` is reduced
  as one quantity, so the near-equal within- and between-sample sums cancel
  before float32 rounding rather than after (the biased MMD^2 is
  ``sum h / n^2``). ``h`` is symmetric, so only the tiles ``I <= J`` are
  computed (``I < J`` count twice), each from one matmul of the stacked rows
  ``[x_I; y_I]`` and ``[x_J; y_J]``.

  Args:
    x, y: ``[n, d]`` each.
    kernel: the kernel.
    h_weight, xy_weight: the two sums' coefficients (static; an estimator's).
    block_size: rows of ``x`` (and of ``y``) per tile; ``None``: 256 up to
      ``n = 2048``, else 512 (the gradient's walk: :func:`_gradient_tile_rows` stacked
      rows, half of them each).

  Returns:
    Scalar (of peak-shifted kernel values).
  """
  b = _paired_block_size(x.shape[0], block_size)
  # The weights of x-x, x-y, y-x and y-y entries: h = xx + yy - xy - yx, plus (xy + yx) / 2.
  xy = -h_weight + 0.5 * xy_weight
  return _symmetric_tile_sums(
    (x, y),
    kernel,
    b,
    _paired_tile,
    (h_weight, xy_weight),
    ((h_weight, xy), (xy, h_weight)),
    gradient_block_size=block_size,
  )


def _paired_tile(rows_i, rows_j, mask, diagonal, *, kernel: Kernel, coefficients: tuple):
  del coefficients  # the caller's combination weighs the two sums
  b = rows_i[0].shape[0]
  k = kernel_matrix(jnp.concatenate(rows_i), jnp.concatenate(rows_j), kernel)
  k = _without_self_pairs(k, diagonal)  # k(x_i, x_i) and k(y_i, y_i); k(x_i, y_i) stays
  if mask is not None:
    k = jnp.where(jnp.tile(mask, (2, 2)), k, 0.0)
  kxx, kxy, kyx, kyy = k[:b, :b], k[:b, b:], k[b:, :b], k[b:, b:]
  return jnp.sum(kxx + kyy - kxy - kyx), 0.5 * (jnp.sum(kxy) + jnp.sum(kyx))


def kernel_quadratic_forms(
  z: jax.Array,
  coefficients: jax.Array,
  kernel: Kernel,
  *,
  block_size: int | None = None,
  mesh=None,
) -> jax.Array:
  """``c_b^T (K - peak) c_b`` for every row ``c_b`` of ``coefficients``, tile by tile.

  ``K`` is the kernel matrix of ``z``; its peak-shifted diagonal is exactly 0,
  so self pairs add nothing. Each tile ``I <= J`` of ``K`` is computed once and
  meets every row at once (one ``[bs, bs] @ [bs, B]`` matmul), so the cost is
  ``O(N^2 (d + B))`` and the memory ``O(N (d + B) + bs^2)``: no ``[N, N]``
  matrix. Permutation and wild-bootstrap tests are such forms (indicator or
  sign vectors).

  Args:
    z: ``[N, d]`` points.
    coefficients: ``[B, N]``.
    kernel: the kernel.
    block_size: tile side; ``None``: 512 rows (or ``N`` when smaller).
    mesh: split the tiles over this mesh's devices (see :func:`_sum_upper_tiles`).

  Returns:
    ``[B]`` forms.
  """
  b = min(block_size or _QUADRATIC_BLOCK_ROWS, z.shape[0])
  (forms,) = _sum_upper_tiles(
    (z, coefficients.T), b, jax.tree_util.Partial(_quadratic_tile, kernel=kernel), mesh
  )
  return forms


def _quadratic_tile(rows_i, rows_j, mask, diagonal, *, kernel: Kernel):
  del mask  # padded rows have zero coefficients
  (zi, ci), (zj, cj) = rows_i, rows_j  # [bs, d] points and [bs, B] coefficients
  k = _without_self_pairs(kernel_matrix(zi, zj, kernel), diagonal)
  return (jnp.sum(jnp.matmul(k, cj, precision=jax.lax.Precision.HIGHEST) * ci, axis=0),)


class KernelBank(NamedTuple):
  """Separate kernels, one statistic each: Gaussians ``exp(-|a - b|_2^2 / (2 l^2))`` with
  ``gaussian_bandwidths`` ``[G]`` then Laplace kernels ``exp(-sqrt(2) |a - b|_1 / l)``
  with ``laplace_bandwidths`` ``[L]`` (the MMD-FUSE / MMDAgg parametrisations)."""

  gaussian_bandwidths: jax.Array
  laplace_bandwidths: jax.Array


def bank_quadratic_forms(
  z: jax.Array,
  coefficients: jax.Array,
  bank: KernelBank,
  *,
  block_size: int | None = None,
  mesh=None,
) -> tuple[jax.Array, jax.Array]:
  """Per kernel of ``bank``: ``c_b^T (K - 1) c_b`` for every row ``c_b`` of ``coefficients``,
  and ``sum_{i != j} K_ij^2``, from one walk over the tiles ``I <= J``.

  As :func:`kernel_quadratic_forms` (each kernel's peak, 1, is subtracted, so
  the diagonal is exactly 0), but with one output per kernel: ``O(N^2 (d + K
  B))`` flops, ``O(N (d + B) + K bs^2)`` memory. L1 distances (Laplace
  kernels) are formed elementwise per tile.

  Args:
    z: ``[N, d]``.
    coefficients: ``[B, N]``.
    bank: the kernels (``G + L`` of them).
    block_size: tile side; ``None``: 256 rows (or ``N`` when smaller).
    mesh: split the tiles over this mesh's devices (see :func:`_sum_upper_tiles`).

  Returns:
    ``(forms [G + L, B], squared_sums [G + L])``.
  """
  b = min(block_size or _BANK_BLOCK_ROWS, z.shape[0])
  tile = jax.tree_util.Partial(_bank_tile, bank=bank)
  return _sum_upper_tiles((z, coefficients.T), b, tile, mesh)


def _bank_shifted_tiles(zi: jax.Array, zj: jax.Array, bank: KernelBank) -> list[jax.Array]:
  """Each kernel of ``bank`` between ``zi`` ``[p, d]`` and ``zj`` ``[q, d]``, minus 1: ``[p, q]``
  tiles, the Gaussians first (from one matmul), then the Laplace kernels (L1 elementwise)."""
  shifted = []
  if bank.gaussian_bandwidths.shape[0]:
    sq = squared_distances(zi, zj)
    shifted += [jnp.expm1(-sq / (2.0 * bw * bw)) for bw in bank.gaussian_bandwidths]
  if bank.laplace_bandwidths.shape[0]:
    l1 = jnp.sum(jnp.abs(zi[:, None, :] - zj[None, :, :]), axis=-1)
    shifted += [jnp.expm1(-math.sqrt(2.0) * l1 / bw) for bw in bank.laplace_bandwidths]
  return shifted


def _real_pairs(size: int, mask: jax.Array | None, diagonal: jax.Array) -> jax.Array:
  """``[size, size]`` bool: the pairs of a tile that count (no self pairs, no padding)."""
  real = ~(jnp.eye(size, dtype=bool) & diagonal)
  return real if mask is None else real & mask


def _bank_tile(rows_i, rows_j, mask, diagonal, *, bank: KernelBank):
  (zi, ci), (zj, cj) = rows_i, rows_j  # [bs, d] points and [bs, B] coefficients
  real = _real_pairs(zi.shape[0], mask, diagonal)
  # One kernel at a time: each [bs, B] product is reduced while it is in cache (stacking
  # the kernels into one [K bs, bs] @ [bs, B] matmul measured slower).
  forms, squares = [], []
  for k in _bank_shifted_tiles(zi, zj, bank):
    k = jnp.where(real, k, 0.0)
    forms.append(jnp.sum(jnp.matmul(k, cj, precision=jax.lax.Precision.HIGHEST) * ci, axis=0))
    squares.append(jnp.sum(jnp.where(real, jnp.square(k + 1.0), 0.0)))
  return jnp.stack(forms), jnp.stack(squares)


def bank_paired_forms(
  x: jax.Array,
  y: jax.Array,
  signs: jax.Array,
  bank: KernelBank,
  *,
  block_size: int | None = None,
  mesh=None,
) -> jax.Array:
  r"""Per kernel of ``bank``: ``sum_{i != j} e_i e_j h_ij`` for every row ``e`` of ``signs``.

  ``h_ij = k(x_i, x_j) + k(y_i, y_j) - k(x_i, y_j) - k(y_i, x_j)`` is the
  paired matrix of the wild bootstrap (``n == m``); its diagonal (which holds
  the pairs ``k(x_i, y_i)``) is left out, as MMDAgg does. ``h`` is ``[n, n]``,
  a quarter of the pooled matrix, and symmetric: only its tiles ``I <= J`` are
  formed, each from one ``[2 bs, 2 bs]`` tile of the stacked ``[x; y]`` rows,
  and each meets every draw in one ``[bs, bs] @ [bs, B]`` matmul per kernel.
  ``O(n^2 (d + K B))`` flops, ``O(n (d + B) + K bs^2)`` memory.

  Args:
    x, y: ``[n, d]`` each.
    signs: ``[B, n]`` draws (any real coefficients).
    bank: the kernels (``G + L`` of them).
    block_size: rows of ``x`` per tile; ``None``: 256 (or ``n`` when smaller).
    mesh: split the tiles over this mesh's devices (see :func:`_sum_upper_tiles`).

  Returns:
    ``[G + L, B]`` forms.
  """
  tiles = jax.tree_util.Partial(_bank_shifted_tiles, bank=bank)
  return _paired_forms(x, y, signs, tiles, block_size, mesh)


def kernel_paired_forms(
  x: jax.Array,
  y: jax.Array,
  signs: jax.Array,
  kernel: Kernel,
  *,
  block_size: int | None = None,
  mesh=None,
) -> jax.Array:
  """:func:`bank_paired_forms` for one kernel (a sum of Gaussians): ``[B]`` forms."""
  tiles = jax.tree_util.Partial(_gaussian_shifted_tiles, kernel=kernel)
  return _paired_forms(x, y, signs, tiles, block_size, mesh)[0]


def _gaussian_shifted_tiles(a: jax.Array, b: jax.Array, kernel: Kernel) -> list[jax.Array]:
  """``[kernel_matrix(a, b, kernel)]``: one kernel's tile, for :func:`_paired_forms`."""
  return [gaussian_kernel(squared_distances(a, b), kernel)]


def _paired_forms(x, y, signs, shifted_tiles, block_size, mesh):
  """``[K, B]``: the paired forms of each kernel that ``shifted_tiles(a, b)`` returns tiles of."""
  b = min(block_size or _BANK_BLOCK_ROWS, x.shape[0])
  tile = jax.tree_util.Partial(_paired_forms_tile, shifted_tiles=shifted_tiles)
  (forms,) = _sum_upper_tiles((x, y, signs.T), b, tile, mesh)
  return forms


def _paired_forms_tile(rows_i, rows_j, mask, diagonal, *, shifted_tiles):
  (xi, yi, ei), (xj, yj, ej) = rows_i, rows_j  # [bs, d], [bs, d] and [bs, B] signs
  b = xi.shape[0]
  real = _real_pairs(b, mask, diagonal)
  forms = []
  for k in shifted_tiles(jnp.concatenate([xi, yi]), jnp.concatenate([xj, yj])):
    h = jnp.where(real, k[:b, :b] + k[b:, b:] - k[:b, b:] - k[b:, :b], 0.0)
    forms.append(jnp.sum(jnp.matmul(h, ej, precision=jax.lax.Precision.HIGHEST) * ei, axis=0))
  return (jnp.stack(forms),)


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

"""On-device batching of in-memory datasets.

The arrays are placed on the devices once (replicated); each epoch draws one
permutation per seed from a ``jax.random`` key, and each batch is a gather on
device, so no host-to-device copy happens per step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P


def put_replicated(tree, mesh: jax.sharding.Mesh):
  """Places a pytree of host arrays on every device of ``mesh`` (works multi-host)."""
  sharding = NamedSharding(mesh, P())

  def put(a):
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

  return jax.tree.map(put, tree)


def epoch_permutations(
  data_keys: jax.Array, epoch: int | jax.Array, num_examples: int, shuffle: bool = True
) -> jax.Array:
  """One permutation of ``range(num_examples)`` per seed: ``[S, N]`` int32; with
  ``shuffle=False`` the identity for every seed and epoch (the stored order)."""
  if not shuffle:
    return jnp.tile(jnp.arange(num_examples, dtype=jnp.int32), (len(data_keys), 1))
  return jax.vmap(lambda k: jax.random.permutation(jax.random.fold_in(k, epoch), num_examples))(
    data_keys
  )


def take_batch(data, permutations: jax.Array, index: jax.Array, batch_size: int):
  """Batch ``index`` of the epoch: each array gathered to ``[S, batch_size, ...]``."""
  rows = jax.lax.dynamic_slice_in_dim(permutations, index * batch_size, batch_size, axis=1)
  return jax.tree.map(lambda a: jnp.take(a, rows, axis=0), data)

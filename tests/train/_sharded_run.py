"""Run in a subprocess with several forced host devices; writes results to an .npz."""

import sys

import jax
import numpy as np
import tiny_task

import gapmmd_jax as g
from gapmmd_jax.train import fit

data_dir, out_dir, result_path = sys.argv[1:4]
assert jax.device_count() == 4, jax.devices()
result = fit(tiny_task.make_task(data_dir), tiny_task.config(out_dir, seeds=(0, 1)))

x, y = tiny_task.mmd_samples()
mmd_values = []
for mesh in (
  jax.sharding.Mesh(np.asarray(jax.devices()), ("data",)),  # automatic sharding
  jax.make_mesh((4,), ("data",)),
):  # explicit sharding
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  x_sharded, y_sharded = jax.device_put(x, sharding), jax.device_put(y, sharding)
  for block_size in (None, 256):
    mmd = jax.jit(lambda a, b: g.mmd2(a, b, estimator="unbiased", block_size=block_size))
    mmd_values.append(np.asarray(mmd(x_sharded, y_sharded)))

np.savez(
  result_path,
  w=result.state["state"]["params"]["w"],
  mmd=np.asarray(mmd_values),
  num_traces=result.num_traces,
)

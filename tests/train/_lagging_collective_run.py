"""One all-reduce over 2 host devices where device 0 arrives seconds after device 1.

Run with ``XLA_FLAGS`` forcing 2 host devices; argv[1] is how many seconds device
0 sleeps (in a host callback) before the ``psum``. Prints ``arrived`` when the
collective completed.
"""

import sys
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

mesh = jax.make_mesh((2,), ("i",))
seconds = float(sys.argv[1])


def _sleep(y, pause):
  time.sleep(float(pause))
  return y


def lagging_sum(x):
  pause = jnp.where(jax.lax.axis_index("i") == 0, seconds, 0.0)
  y = jax.pure_callback(_sleep, jax.ShapeDtypeStruct(x.shape, x.dtype), x, pause)
  return jax.lax.psum(y, "i")


# The callback's result carries no device-varying type, hence check_vma=False.
f = jax.jit(
  jax.shard_map(
    lagging_sum,
    mesh=mesh,
    in_specs=PartitionSpec("i"),
    out_specs=PartitionSpec(),
    check_vma=False,
  )
)
x = jax.device_put(jnp.ones((2, 4)), NamedSharding(mesh, PartitionSpec("i")))
f(x).block_until_ready()
print("arrived")

"""One of two processes of a jax.distributed job on localhost (2 CPU devices each).

Usage: _multiprocess_run.py PROCESS_ID PORT DATA_DIR OUT_DIR RESULT_PATH
Process 0 writes the result .npz; both check that they see 4 global devices.
"""

import sys

import jax

UNAVAILABLE = 3  # exit status: this jaxlib has no CPU collectives

try:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
except (AttributeError, ValueError) as e:
  print(f"gloo CPU collectives unavailable: {e}")
  sys.exit(UNAVAILABLE)

process_id, port, data_dir, out_dir, result_path = sys.argv[1:6]
jax.distributed.initialize(
  coordinator_address=f"127.0.0.1:{port}",
  num_processes=2,
  process_id=int(process_id),
  initialization_timeout=120,
)

import numpy as np  # noqa: E402
import tiny_task  # noqa: E402

import gapmmd_jax as g  # noqa: E402
from gapmmd_jax.train import fit  # noqa: E402

assert jax.device_count() == 4 and jax.local_device_count() == 2, jax.devices()
result = fit(tiny_task.make_task(data_dir), tiny_task.config(out_dir, seeds=(0, 1)))

# MMD of sample sets whose rows live on the two processes (each holds its own half).
x, y = tiny_task.mmd_samples()
mesh = jax.make_mesh((4,), ("data",))
sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
mine = (
  slice(int(process_id) * 2000, (int(process_id) + 1) * 2000),
  slice(int(process_id) * 1500, (int(process_id) + 1) * 1500),
)
x_global = jax.make_array_from_process_local_data(sharding, x[mine[0]], x.shape)
y_global = jax.make_array_from_process_local_data(sharding, y[mine[1]], y.shape)
mmd = jax.jit(
  lambda a, b: g.mmd2(a, b, estimator="unbiased"),
  out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
)
value = float(mmd(x_global, y_global))

if jax.process_index() == 0:
  np.savez(
    result_path, w=result.state["state"]["params"]["w"], mmd=value, num_traces=result.num_traces
  )
jax.distributed.shutdown()

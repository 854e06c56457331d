"""Run with 4 forced host devices: the two-sample tests on rows sharded over a mesh give the
single-device results, and each device walks a quarter of the tiles. Exits non-zero if not."""

import jax
import numpy as np

import gapmmd_jax as g

assert jax.device_count() == 4, jax.devices()
rng = np.random.default_rng(0)
x = rng.standard_normal((400, 5)).astype(np.float32)
y = (rng.standard_normal((240, 5)) + 0.2).astype(np.float32)
paired_y = (rng.standard_normal((400, 5)) + 0.2).astype(np.float32)
key = jax.random.key(0)
tiles = {"block_size": 64}  # several tiles per walk, more than the devices
agg = lambda a, b: g.mmd_agg(key, a, b, num_draws=99, num_correction_draws=99, **tiles)
tests = {  # name: (test, its second sample)
  "mmd_test unbiased": (
    lambda a, b: g.mmd_test(key, a, b, num_draws=99, estimator="unbiased", **tiles),
    y,
  ),
  "mmd_test wild bootstrap": (
    lambda a, b: g.mmd_test(key, a, b, num_draws=99, method="wild-bootstrap", **tiles),
    paired_y,
  ),
  "mmd_fuse": (lambda a, b: g.mmd_fuse(key, a, b, num_draws=99, **tiles), y),
  "mmd_agg wild bootstrap": (agg, paired_y),
  "mmd_agg permutation": (agg, y),
}
explicit = jax.make_mesh((4,), ("data",))
automatic = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))  # XLA decides
for name, (test, second) in tests.items():
  single = test(x, second)
  for mesh in (explicit, automatic) if name == "mmd_test unbiased" else (explicit,):
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    sharded = jax.jit(test)(jax.device_put(x, rows), jax.device_put(second, rows))
    for field in ("statistic", "p_value", "reject", "p_values", "thresholds", "statistics"):
      ours, reference = getattr(sharded, field), getattr(single, field)
      if reference is None:  # mmd_agg's per-kernel fields only
        continue
      # The p-values (per kernel for mmd_agg): the tiles' sums add up in another order, so a
      # null statistic within rounding of the observed one may count on either side: one
      # draw's 1 / (99 + 1) is allowed there (seen on one CPU, 2026-11-29).
      atol = 1 / (99 + 1) + 1e-6 if field in ("p_value", "p_values") else 1e-6
      np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=atol, err_msg=f"{name} {field}")

# Under the explicit mesh the tile walk is one shard_map whose body scans 1/4 of the tiles:
# 400 + 240 pooled rows in tiles of 64 rows give 10 x 11 / 2 = 55 tiles, 14 per device (the
# last device's 13 and one padding tile of weight 0).
rows = jax.sharding.NamedSharding(explicit, jax.sharding.PartitionSpec("data"))
jaxpr = jax.make_jaxpr(lambda a, b: g.mmd_test(key, a, b, num_draws=99, **tiles))(
  jax.device_put(x, rows), jax.device_put(y, rows)
)


def scan_lengths(jaxpr, inside_shard_map=False):
  """Lengths of the scans inside a shard_map, anywhere in ``jaxpr``."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "scan" and inside_shard_map:
      yield eqn.params["length"]
    for param in eqn.params.values():
      inner = getattr(param, "jaxpr", param)  # a ClosedJaxpr's or a Jaxpr
      if hasattr(inner, "eqns"):
        yield from scan_lengths(inner, inside_shard_map or eqn.primitive.name == "shard_map")


lengths = set(scan_lengths(jaxpr.jaxpr))
assert lengths == {14}, lengths
print("ok")

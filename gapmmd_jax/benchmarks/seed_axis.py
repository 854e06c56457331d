"""How several seeds should share one compiled train step on this machine.

Times the GAP-LeNet train step (batch 128, Adam) for one seed and for S seeds
combined by ``vmap``, by unrolling inside the step (the harness's two
``--seed-axis`` modes) and by a ``lax.map`` loop, after warm-up, with
``block_until_ready``; reports the median and the cost relative to one seed.
Then the same for the step's second convolution alone (forward and backward),
also written as one grouped convolution (``feature_group_count``) and as
patches plus one batched matmul: the ways a batched convolution could be
lowered.

  gapmmd bench seed-axis --data-dir ../shared/data/mnist --seeds 3
Writes ``benchmarks/results/seed_axis.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from gapmmd_jax.benchmarks._cells import positive_int
from gapmmd_jax.experiments import gap_mmd
from gapmmd_jax.train._harness import over_seeds


def _median_seconds(fn, args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # compile and warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def conv_variants(seeds: int, batch: int) -> tuple[dict, tuple]:
  """GAP-LeNet's second convolution (5x5, 32 -> 64 channels, 14x14), forward and backward,
  for one seed and for ``seeds`` seeds written five ways; returns (functions, arguments)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((seeds, batch, 14, 14, 32)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((seeds, 5, 5, 32, 64)), jnp.float32)

  def conv(x, w, groups=1):
    return jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", feature_group_count=groups, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )

  def grouped(x, w):  # the seeds as channel groups of one convolution
    xg = jnp.moveaxis(x, 0, 3).reshape(batch, 14, 14, seeds * 32)
    wg = jnp.moveaxis(w, 0, 3).reshape(5, 5, 32, seeds * 64)
    return jnp.moveaxis(conv(xg, wg, seeds).reshape(batch, 14, 14, seeds, 64), 3, 0)

  def im2col(x, w):  # patches, then one batched matmul over seeds
    patches = jax.lax.conv_general_dilated_patches(
      x.reshape(seeds * batch, 14, 14, 32),
      (5, 5),
      (1, 1),
      "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    ).reshape(seeds, -1, 32 * 25)
    kernel = jnp.transpose(w, (0, 3, 1, 2, 4)).reshape(seeds, 32 * 25, 64)
    return jnp.einsum("snk,sko->sno", patches, kernel).reshape(seeds, batch, 14, 14, 64)

  forms = {
    "one seed": lambda x, w: conv(x[0], w[0]),
    "vmap": jax.vmap(conv),
    "unroll": lambda x, w: jnp.stack([conv(x[i], w[i]) for i in range(seeds)]),
    "grouped conv": grouped,
    "im2col + batched matmul": im2col,
  }
  grads = {
    f"conv2 fwd+bwd, {name}": jax.jit(jax.grad(lambda w, x, f=f: jnp.sum(f(x, w) ** 2)))
    for name, f in forms.items()
  }
  return grads, (w, x)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="gapmmd bench seed-axis",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
    allow_abbrev=False,
  )
  parser.add_argument("--data-dir", default=None, help="MNIST IDX directory")
  parser.add_argument("--seeds", type=positive_int, default=3, help="number of seeds S")
  parser.add_argument("--repeats", type=positive_int, default=7, help="timed calls per variant")
  parser.add_argument("--out", default="benchmarks/results", help="output directory")
  args = parser.parse_args(argv)

  cfg = dataclasses.replace(
    gap_mmd.VARIANTS["default"],
    data_dir=args.data_dir,
    max_train_examples=1024,
    max_eval_examples=100,
  )
  task = gap_mmd.build_task(cfg)
  keys = jax.vmap(jax.random.key)(jnp.arange(args.seeds))
  states = jax.jit(jax.vmap(task.init))(keys)
  batch = {
    k: jnp.asarray(np.stack([v[: cfg.batch_size]] * args.seeds)) for k, v in task.train_data.items()
  }
  first = lambda tree: jax.tree.map(lambda a: a[0], tree)
  variants = {
    "one seed": jax.jit(lambda s, b, k: task.train_step(first(s), first(b), k[0])),
    "vmap": jax.jit(over_seeds(task.train_step, "vmap", (0, 0, 0))),
    "unroll": jax.jit(over_seeds(task.train_step, "unroll", (0, 0, 0))),
    "lax.map": jax.jit(lambda s, b, k: jax.lax.map(lambda a: task.train_step(*a), (s, b, k))),
  }
  seconds = {
    name: _median_seconds(fn, (states, batch, keys), args.repeats) for name, fn in variants.items()
  }
  rows = [
    {
      "variant": name,
      "seeds": 1 if name == "one seed" else args.seeds,
      "median_ms": 1e3 * t,
      "cost_vs_one_seed": t / seconds["one seed"],
    }
    for name, t in seconds.items()
  ]
  convs, conv_args = conv_variants(args.seeds, cfg.batch_size)
  conv_seconds = {name: _median_seconds(fn, conv_args, args.repeats) for name, fn in convs.items()}
  one = conv_seconds["conv2 fwd+bwd, one seed"]
  rows += [
    {
      "variant": name,
      "seeds": 1 if name.endswith("one seed") else args.seeds,
      "median_ms": 1e3 * t,
      "cost_vs_one_seed": t / one,
    }
    for name, t in conv_seconds.items()
  ]
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  meta = {
    "devices": [str(d) for d in jax.devices()],
    "jax": jax.__version__,
    "batch_size": cfg.batch_size,
    "repeats": args.repeats,
  }
  (out / "seed_axis.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
  table = ["| variant | seeds | median step (ms) | cost vs one seed |", "| --- | --- | --- | --- |"]
  table += [
    f"| {r['variant']} | {r['seeds']} | {r['median_ms']:.1f} | {r['cost_vs_one_seed']:.2f}x |"
    for r in rows
  ]
  (out / "seed_axis.md").write_text("\n".join(table) + "\n")
  print("\n".join(table))
  return 0


if __name__ == "__main__":
  sys.exit(main())

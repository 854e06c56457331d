"""Two-sample tests at scale: ours side by side with MMDAgg and MMD-FUSE, as their users call them.

Every (test, n, d) cell runs in its own process with 2 CPU threads (or on the
GPU where one is present), on float32 data x ~ N(0, 1), y ~ N(0.1, 1),
n = m rows of d features. A cell calls the test once on data of seed 0
(compilation and warm-up), then ``--repeats`` times on fresh data of the same
shape (seeds 1, 2, ...), and reports the median time with the result blocked
on (``--repeats 0``, for cells that take many minutes: the first call's time,
compilation included, marked so in the table), the peak resident memory of
the process, and the extra memory: the peak above the process's after
``import jax`` (the test's own, plus the runtime's start-up and the inputs).
Out of memory (the parent kills a cell above ``--memory-limit-gib``) and
time-outs are reported as such.

Tests (the work each does differs; the table says how much):
  ours-permutation  gapmmd_jax.mmd_test, 5-bandwidth kernel, --draws permutations
  ours-wild         the same with method="wild-bootstrap"
  ours-fuse         gapmmd_jax.mmd_fuse, 20 kernels (MMD-FUSE's), --draws permutations
  ours-agg          gapmmd_jax.mmd_agg, 20 kernels (MMDAgg's), wild bootstrap --draws + --draws
  mmdagg            MMDAgg in JAX (Schrab et al. 2023), defaults: 20 kernels, wild bootstrap
                    2000 + 2000 draws
  mmdfuse           MMD-FUSE (Biggs et al. 2023), defaults: 20 kernels, 2000 permutations
  yardstick         the product any permutation test must form: a jitted K @ E with K the
                    precomputed [2n, 2n] float32 Gaussian kernel matrix of the pooled sample
                    and E [2n, --draws] random signs (K and E made outside the timing)

Our tests take --chunk-size (draws per walk over the kernel tiles; memory grows
with it, time falls as the tiles are formed fewer times) and --block-size (tile
side); unset, each test's default. The references ignore both.

MMDAgg and MMD-FUSE are imported from --anchors (default ../shared/anchors,
or $GAPMMD_ANCHORS_DIR); cells whose code is missing say so.

  gapmmd bench test                                  # n in 1000..20000, d = 10
  gapmmd bench test --n 5000 --d 10 100 --tests ours-permutation mmdagg
  gapmmd bench test --n 8192 --d 64 --draws 1000 --tests ours-permutation ours-wild yardstick
  gapmmd bench test --n 12500 --repeats 0 --tests ours-fuse --chunk-size 320
Writes JSON, markdown and a PNG (seconds against n) to --out (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import sys
import time

import numpy as np

from gapmmd_jax.benchmarks._cells import (
  non_negative_int,
  positive_float,
  positive_int,
  run_cell,
  write_results,
)

TESTS = (
  "ours-permutation",
  "ours-wild",
  "ours-fuse",
  "ours-agg",
  "mmdagg",
  "mmdfuse",
  "yardstick",
)
# Reference test -> our implementation of the same test (same kernels and draws).
SAME_TEST = {"mmdfuse": "ours-fuse", "mmdagg": "ours-agg"}
WORK = {
  "ours-permutation": "1 kernel (5 bandwidths), B permutations",
  "ours-wild": "1 kernel (5 bandwidths), B wild-bootstrap draws",
  "ours-fuse": "20 kernels, B permutations",
  "ours-agg": "20 kernels, B + B wild-bootstrap draws",
  "mmdagg": "20 kernels, 2000 + 2000 wild-bootstrap draws",
  "mmdfuse": "20 kernels, 2000 permutations",
  "yardstick": "K @ E, K [2n, 2n] precomputed, E [2n, B]",
}
# Our tests whose time is also shown as a multiple of the yardstick's.
AGAINST_YARDSTICK = ("ours-permutation", "ours-wild")


def make_data(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  return (
    rng.standard_normal((n, d)).astype(np.float32),
    (rng.standard_normal((n, d)) + 0.1).astype(np.float32),
  )


def _anchors_dir(given: str | None) -> pathlib.Path:
  return pathlib.Path(given or os.environ.get("GAPMMD_ANCHORS_DIR") or "../shared/anchors")


def _test_fn(
  name: str, draws: int, anchors: pathlib.Path, tiling: dict[str, int | None] | None = None
):
  """``(x, y, seed) -> result`` of one test (its decision or p-value last), compiled on first
  use; ``tiling`` (``chunk_size``, ``block_size``) goes to our tests."""
  import jax

  if name.startswith("ours"):
    import gapmmd_jax

    tiles = tiling or {}
    chunk, block = tiles.get("chunk_size"), tiles.get("block_size")
    ours = {  # (key, x, y) -> the decision or the p-value
      "ours-permutation": lambda k, x, y: (
        gapmmd_jax.mmd_test(
          k, x, y, num_draws=draws, method="permutation", chunk_size=chunk, block_size=block
        ).p_value
      ),
      "ours-wild": lambda k, x, y: (
        gapmmd_jax.mmd_test(
          k, x, y, num_draws=draws, method="wild-bootstrap", chunk_size=chunk, block_size=block
        ).p_value
      ),
      "ours-fuse": lambda k, x, y: (
        gapmmd_jax.mmd_fuse(k, x, y, num_draws=draws, chunk_size=chunk, block_size=block).p_value
      ),
      "ours-agg": lambda k, x, y: (
        gapmmd_jax.mmd_agg(
          k, x, y, num_draws=draws, num_correction_draws=draws, chunk_size=chunk, block_size=block
        ).reject
      ),
    }
    test = jax.jit(ours[name])
    return lambda x, y, seed: test(jax.random.key(seed), x, y)
  folder = anchors / name
  if not folder.is_dir():
    raise ModuleNotFoundError(f"No module named {name!r}: {folder} is missing (--anchors)")
  sys.path.insert(0, str(folder))
  if name == "mmdagg":
    from mmdagg.jax import mmdagg

    return lambda x, y, seed: mmdagg(x, y, seed=seed)
  from mmdfuse import mmdfuse

  return lambda x, y, seed: mmdfuse(x, y, jax.random.key(seed))


def _yardstick(draws: int):
  """``(product, prepare)``: ``prepare(x, y, seed)`` makes (and blocks on) a Gaussian kernel
  matrix ``K [N, N]`` of the pooled ``[x; y]`` and random signs ``E [N, draws]``; the timed
  call ``product(K, E)`` is the jitted ``K @ E``."""
  import jax
  import jax.numpy as jnp

  @jax.jit
  def inputs(key, x, y):
    z = jnp.concatenate([x, y])
    sq = jnp.sum(z * z, axis=1)
    distances = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)
    kernel = jnp.exp(-distances / jnp.mean(distances))
    signs = jax.random.rademacher(key, (z.shape[0], draws), dtype=z.dtype)
    return kernel, signs

  product = jax.jit(jnp.matmul)

  def prepare(x, y, seed):
    return jax.block_until_ready(inputs(jax.random.key(seed), x, y))

  return product, prepare


def worker(
  name: str,
  n: int,
  d: int,
  draws: int,
  repeats: int,
  anchors: pathlib.Path,
  tiling: dict[str, int | None] | None = None,
) -> dict:
  """Times one cell in this process (``tiling``: our tests' ``chunk_size`` and ``block_size``)."""
  import jax

  base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  if name == "yardstick":  # its inputs are made outside the timing
    test, prepare = _yardstick(draws)
  else:
    test, prepare = _test_fn(name, draws, anchors, tiling), lambda x, y, seed: (x, y, seed)
  times, results = [], []
  for seed in range(repeats + 1):  # seed 0: compilation and warm-up
    inputs = prepare(*make_data(n, d, seed), seed)
    start = time.perf_counter()
    result = jax.block_until_ready(test(*inputs))
    times.append(time.perf_counter() - start)
    if name != "yardstick":
      results.append(np.asarray(jax.tree.leaves(result)[-1]).item())
    del inputs, result
  first = times[0]
  if repeats:  # the first call only when it is the only one
    times, results = times[1:], results[1:]
  peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  return {
    "seconds": float(np.median(times)),
    "repeats": repeats,
    "first_call_s": first,
    "peak_rss_gib": peak_gib,
    "extra_memory_gib": peak_gib - base_rss / 2**20,
    "results": results,
  }


def _markdown(rows: list[dict], draws: int, tiling: dict[str, int | None]) -> str:
  chosen = ", ".join(f"{key} = {value}" for key, value in tiling.items() if value is not None)
  lines = [f"Our tests with {chosen}.", ""] if chosen else []
  lines += [
    "| test | work | n = m | d | steady s | peak RSS GiB | extra GiB | time / ours (same test) "
    "| time / yardstick |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ]
  for r in rows:
    work = WORK[r["test"]].replace("B ", f"{draws} ")
    if r["status"] != "ok":
      lines.append(f"| {r['test']} | {work} | {r['n']} | {r['d']} | {r['status']} | | | | |")
      continue
    ratios = [f"{r[key]:.2f}x" if key in r else "" for key in ("vs_ours", "vs_yardstick")]
    seconds = f"{r['seconds']:.3g}" + (" (first call)" if r["repeats"] == 0 else "")
    lines.append(
      f"| {r['test']} | {work} | {r['n']} | {r['d']} | {seconds} | "
      f"{r['peak_rss_gib']:.2f} | {r['extra_memory_gib']:.2f} | {' | '.join(ratios)} |"
    )
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="gapmmd bench test",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
    allow_abbrev=False,
  )
  parser.add_argument(
    "--n",
    type=positive_int,
    nargs="+",
    default=[1000, 4000, 5000, 20000],
    help="samples per set (n = m)",
  )
  parser.add_argument("--d", type=positive_int, nargs="+", default=[10], help="dimensions")
  parser.add_argument("--tests", nargs="+", choices=TESTS, default=list(TESTS), help="tests to run")
  parser.add_argument(
    "--draws", type=positive_int, default=2000, help="permutations / bootstrap draws of our tests"
  )
  parser.add_argument(
    "--repeats",
    type=non_negative_int,
    default=2,
    help="timed calls per cell after the first, each on fresh data (0: time the first call)",
  )
  parser.add_argument("--timeout", type=positive_float, default=900.0, help="seconds per cell")
  parser.add_argument(
    "--memory-limit-gib",
    type=positive_float,
    default=20.0,
    help="kill a cell whose resident memory exceeds this",
  )
  parser.add_argument(
    "--anchors",
    default=None,
    help="folder holding mmdagg/ and mmdfuse/ (default ../shared/anchors)",
  )
  parser.add_argument(
    "--chunk-size",
    type=positive_int,
    default=None,
    help="our tests' draws per walk over the kernel tiles (default: each test's own)",
  )
  parser.add_argument(
    "--block-size",
    type=positive_int,
    default=None,
    help="our tests' tile side (default: each test's own)",
  )
  parser.add_argument("--out", default="benchmarks/results", help="output directory")
  parser.add_argument("--worker", nargs=3, metavar=("TEST", "N", "D"), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  anchors = _anchors_dir(args.anchors).resolve()
  tiling = {"chunk_size": args.chunk_size, "block_size": args.block_size}
  if args.worker:
    name, n, d = args.worker
    print(json.dumps(worker(name, int(n), int(d), args.draws, args.repeats, anchors, tiling)))
    return 0
  tiling_argv = [
    f"--{key.replace('_', '-')}={value}" for key, value in tiling.items() if value is not None
  ]

  rows = []
  for d in args.d:
    for n in args.n:
      for name in args.tests:
        result = run_cell(
          "gapmmd_jax.benchmarks.two_sample_test",
          [
            "--worker",
            name,
            str(n),
            str(d),
            "--draws",
            str(args.draws),
            "--repeats",
            str(args.repeats),
            "--anchors",
            str(anchors),
            *tiling_argv,
          ],
          args.timeout,
          args.memory_limit_gib,
        )
        rows.append({"test": name, "n": n, "d": d, **result})
        shown = f"{result['seconds']:.4g} s" if result["status"] == "ok" else result["status"]
        print(f"d={d:4d} n={n:6d} {name:17s} {shown}", flush=True)
      done = {r["test"]: r for r in rows if r["n"] == n and r["d"] == d and r["status"] == "ok"}
      for reference, ours in SAME_TEST.items():
        if reference in done and ours in done:
          done[reference]["vs_ours"] = done[reference]["seconds"] / done[ours]["seconds"]
      if "yardstick" in done:
        for ours in AGAINST_YARDSTICK:
          if ours in done:
            done[ours]["vs_yardstick"] = done[ours]["seconds"] / done["yardstick"]["seconds"]

  write_results(
    args.out,
    "two_sample_test",
    rows,
    _markdown(rows, args.draws, tiling),
    draws=args.draws,
    **tiling,
  )
  from gapmmd_jax import plotting

  if plotting.seconds_by_size(
    rows, "test", TESTS, "two-sample tests, d = {d}", pathlib.Path(args.out) / "two_sample_test.png"
  ):
    print(f"and {args.out}/two_sample_test.png")
  return 0


if __name__ == "__main__":
  sys.exit(main())

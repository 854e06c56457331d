"""MMD throughput: the (n + m)^2 kernel hot path, side by side with other implementations.

Every (implementation, n, d) cell runs in its own process (so one's memory
and threads cannot disturb another's), on the same float32 data (x ~ N(0, 1),
y ~ N(0.1, 1), n = m rows of d features, seeded), with 2 CPU threads, or on
the GPU where one is present (JAX and PyTorch alike; memory is then the
device's peak, inputs included, instead of the host's extra RSS). A cell
compiles / warms up once, then repeats until 20 calls or 10 s, and reports
the median with ``block_until_ready``. Out of memory (the parent kills a
child above ``--memory-limit-gib``) and time-outs are reported as such.

Implementations:
  ours-auto, ours-full, ours-tiled  gapmmd_jax.mmd2 (automatic, one full matrix, tiles of 1024)
  ours-auto-ynn-off   ours-auto with XLA's default YNNPACK reduce fusion turned off
  ours-auto-ynn-dots  ours-auto under the --ynn-dots flag the train steps opt into
  jax-naive        the reference code ported to JAX as written ([N, N, d] differences)
  torch-reference  the widely copied PyTorch mmd_rbf, step by step
  torch-gram       PyTorch with the Gram matrix (one matmul) instead of differences
  pykeops          KeOps symbolic reduction (only where pykeops is installed)
  yardstick        a plain jitted Z @ Z.T of the same N (the machine's matmul speed)

  gapmmd bench mmd                   # the sweep: n in 256..65536, d in 2, 64, 512
  gapmmd bench mmd --n 1024 --d 64 --impls ours-auto torch-reference
Writes JSON, markdown and a log-log PNG to --out (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import sys
import time

import numpy as np

from gapmmd_jax._xla_flags import YNN_DOTS, with_xla_flags
from gapmmd_jax.benchmarks._cells import (
    non_negative_int,
    positive_float,
    positive_int,
    run_cell,
    write_results,
)

IMPLEMENTATIONS = ("ours-auto", "ours-full", "ours-tiled", "ours-auto-ynn-off",
                   "ours-auto-ynn-dots", "jax-naive", "torch-reference", "torch-gram", "pykeops",
                   "yardstick")
# Cells run under XLA flags of their own (appended to $XLA_FLAGS); jaxlib 0.10's
# CPU backend fuses reductions into YNNPACK by default, which "-reduce" undoes.
XLA_FLAGS_BY_IMPL = {"ours-auto-ynn-off": "--xla_cpu_experimental_ynn_fusion_type=-reduce",
                     "ours-auto-ynn-dots": YNN_DOTS}
KERNEL_MUL, KERNEL_NUM = 2.0, 5
MAX_REPEATS = 20


def make_data(n: int, d: int, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(0)
  x = rng.standard_normal((n, d)).astype(dtype)
  y = (rng.standard_normal((n, d)) + 0.1).astype(dtype)
  return x, y


# ---------- implementations (each returns a zero-argument callable and a sync) ----------

def _jax_impl(name: str, x: np.ndarray, y: np.ndarray):
  import jax
  import jax.numpy as jnp

  import gapmmd_jax

  xj, yj = jnp.asarray(x), jnp.asarray(y)
  if name == "yardstick":
    z = jnp.concatenate([xj, yj])
    f = jax.jit(lambda a: a @ a.T)
    return lambda: f(z), jax.block_until_ready
  if name == "jax-naive":
    def naive(a, b):
      z = jnp.concatenate([a, b])
      total = z.shape[0]
      l2 = jnp.sum((z[None, :, :] - z[:, None, :]) ** 2, axis=2)
      bandwidth = jnp.sum(l2) / (float(total) * total - total) / KERNEL_MUL ** (KERNEL_NUM // 2)
      k = sum(jnp.exp(-l2 / (bandwidth * KERNEL_MUL ** i)) for i in range(KERNEL_NUM))
      n = a.shape[0]
      return jnp.mean(k[:n, :n] + k[n:, n:] - k[:n, n:] - k[n:, :n])
    f = jax.jit(naive)
  else:
    block = {"ours-full": 1 << 30, "ours-tiled": 1024}.get(name)  # None: automatic
    f = jax.jit(lambda a, b: gapmmd_jax.mmd2(a, b, kernel_mul=KERNEL_MUL, kernel_num=KERNEL_NUM,
                                             block_size=block))
  return lambda: f(xj, yj), jax.block_until_ready


def _torch_impl(name: str, x: np.ndarray, y: np.ndarray):
  import torch

  torch.set_num_threads(2)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

  def reference(source, target):
    n = source.shape[0]
    total = torch.cat([source, target], dim=0)
    count = total.shape[0]
    total0 = total.unsqueeze(0).expand(count, count, total.shape[1])
    total1 = total.unsqueeze(1).expand(count, count, total.shape[1])
    l2 = ((total0 - total1) ** 2).sum(2)
    bandwidth = torch.sum(l2) / (count ** 2 - count) / (KERNEL_MUL ** (KERNEL_NUM // 2))
    k = sum(torch.exp(-l2 / (bandwidth * KERNEL_MUL ** i)) for i in range(KERNEL_NUM))
    return torch.mean(k[:n, :n] + k[n:, n:] - k[:n, n:] - k[n:, :n])

  def gram(source, target):
    n = source.shape[0]
    total = torch.cat([source, target], dim=0)
    total = total - total.mean(0)
    count = total.shape[0]
    sq = (total * total).sum(1)
    l2 = (sq[:, None] + sq[None, :] - 2.0 * total @ total.T).clamp_min_(0.0)
    bandwidth = 2.0 * count * sq.sum() / (count ** 2 - count) / (KERNEL_MUL ** (KERNEL_NUM // 2))
    k = sum(torch.exp(-l2 / (bandwidth * KERNEL_MUL ** i)) for i in range(KERNEL_NUM))
    return k[:n, :n].mean() + k[n:, n:].mean() - 2.0 * k[:n, n:].mean()

  fn = reference if name == "torch-reference" else gram

  def run():
    with torch.no_grad():
      return fn(xt, yt)

  return run, _torch_sync


def _torch_sync(value):
  import torch
  if torch.cuda.is_available():
    torch.cuda.synchronize()
  return value


def _accelerator_peak_gib(name: str) -> float | None:
  """Peak accelerator memory of this process in GiB (inputs included); None on CPU."""
  if name.startswith("torch") or name == "pykeops":
    import torch
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
  import jax
  device = jax.devices()[0]
  if device.platform == "cpu":
    return None
  return device.memory_stats()["peak_bytes_in_use"] / 2**30


def _keops_impl(x: np.ndarray, y: np.ndarray):
  import torch
  from pykeops.torch import LazyTensor

  torch.set_num_threads(2)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  z = torch.from_numpy(np.concatenate([x, y])).to(device)
  n = x.shape[0]
  weights = torch.cat([torch.full((n, 1), 1.0 / n), torch.full((len(z) - n, 1), -1.0 / (len(z) - n))])
  weights = weights.to(device)

  def run():
    centred = z - z.mean(0)
    count = centred.shape[0]
    bandwidth = 2.0 * count * (centred ** 2).sum() / (count ** 2 - count)
    bandwidth = bandwidth / KERNEL_MUL ** (KERNEL_NUM // 2)
    zi, zj = LazyTensor(centred[:, None, :]), LazyTensor(centred[None, :, :])
    sq = ((zi - zj) ** 2).sum(-1)
    k = sum((-sq / float(bandwidth * KERNEL_MUL ** i)).exp() for i in range(KERNEL_NUM))
    return (weights * (k @ weights)).sum()  # w^T K w = biased MMD^2

  return run, _torch_sync


def worker(name: str, n: int, d: int, max_seconds: float) -> dict:
  """Times one cell in this process; returns the measurements."""
  x, y = make_data(n, d)
  base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  if name.startswith("torch"):
    fn, sync = _torch_impl(name, x, y)
  elif name == "pykeops":
    fn, sync = _keops_impl(x, y)
  else:
    fn, sync = _jax_impl(name, x, y)
  start = time.perf_counter()
  value = sync(fn())  # compilation and warm-up
  first = time.perf_counter() - start
  times = []
  while not times or (len(times) < MAX_REPEATS and sum(times) + first < max_seconds):
    start = time.perf_counter()
    sync(fn())
    times.append(time.perf_counter() - start)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  accelerator_gib = _accelerator_peak_gib(name)
  memory = {"extra_memory_gib": (peak - base_rss) / 2**20, "memory_kind": "host"}
  if accelerator_gib is not None:
    memory = {"extra_memory_gib": accelerator_gib, "memory_kind": "accelerator peak"}
  scalar = None if name == "yardstick" else float(value)
  return {"seconds": float(np.median(times)), "repeats": len(times), "first_call_s": first,
          **memory, "value": scalar}


def float64_reference(n: int, d: int) -> float:
  """MMD^2 of the cell's data in float64 (our tiled path with x64 enabled)."""
  import jax
  jax.config.update("jax_enable_x64", True)
  import gapmmd_jax

  x, y = make_data(n, d)
  return float(gapmmd_jax.mmd2(x.astype(np.float64), y.astype(np.float64),
                               kernel_mul=KERNEL_MUL, kernel_num=KERNEL_NUM))


def _run_child(args: list[str], timeout: float, memory_limit_gib: float,
               xla_flags: str | None = None) -> dict:
  return run_cell("gapmmd_jax.benchmarks.mmd_throughput", args, timeout, memory_limit_gib,
                  xla_flags=xla_flags)


def _markdown(rows: list[dict], d: int) -> str:
  sizes = sorted({r["n"] for r in rows if r["d"] == d})
  impls = [i for i in IMPLEMENTATIONS if any(r["impl"] == i and r["d"] == d for r in rows)]
  lines = [f"d = {d}: median seconds (speed-up vs torch-reference / vs yardstick; GiB: extra host "
           "memory, or peak device memory on a GPU; "
           "relative error vs float64)", "",
           "| implementation | " + " | ".join(f"n = {n}" for n in sizes) + " |",
           "| --- |" + " --- |" * len(sizes)]
  for impl in impls:
    cells = []
    for n in sizes:
      r = next((r for r in rows if r["impl"] == impl and r["n"] == n and r["d"] == d), None)
      if r is None:
        cells.append("")
      elif r["status"] != "ok":
        cells.append(r["status"])
      else:
        parts = [f"{r['seconds']:.3g} s"]
        ratios = [f"{r[k]:.3g}x" if r.get(k) else "-" for k in ("vs_reference", "vs_yardstick")]
        parts.append(f"({' / '.join(ratios)}; {r['extra_memory_gib']:.2f} GiB")
        if r.get("relative_error") is not None:
          parts[-1] += f"; err {r['relative_error']:.1e}"
        cells.append(" ".join(parts) + ")")
    lines.append(f"| {impl} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="gapmmd bench mmd", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   allow_abbrev=False)
  parser.add_argument("--n", type=positive_int, nargs="+", default=[256, 1024, 4096, 16384, 65536],
                      help="samples per set (n = m)")
  parser.add_argument("--d", type=positive_int, nargs="+", default=[2, 64, 512],
                      help="feature dimensions")
  parser.add_argument("--impls", nargs="+", choices=IMPLEMENTATIONS, default=list(IMPLEMENTATIONS),
                      help="implementations to run")
  parser.add_argument("--timeout", type=positive_float, default=180.0, help="seconds per cell")
  parser.add_argument("--max-seconds", type=positive_float, default=10.0,
                      help="stop repeating a cell after this many seconds")
  parser.add_argument("--memory-limit-gib", type=positive_float, default=16.0,
                      help="kill a cell whose resident memory exceeds this")
  parser.add_argument("--float64-max-n", type=non_negative_int, default=16384,
                      help="largest n for which the float64 reference is computed")
  parser.add_argument("--out", default="benchmarks/results", help="output directory")
  parser.add_argument("--worker", nargs=3, metavar=("IMPL", "N", "D"), help=argparse.SUPPRESS)
  parser.add_argument("--float64", nargs=2, type=int, metavar=("N", "D"), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    name, n, d = args.worker
    print(json.dumps(worker(name, int(n), int(d), args.max_seconds)))
    return 0
  if args.float64:
    print(json.dumps({"value": float64_reference(*args.float64)}))
    return 0

  rows = []
  for d in args.d:
    for n in args.n:
      exact = None
      if n <= args.float64_max_n:
        result = _run_child(["--float64", str(n), str(d)], 10 * args.timeout,
                            args.memory_limit_gib)
        exact = result.get("value")
      for impl in args.impls:
        result = _run_child(["--worker", impl, str(n), str(d), "--max-seconds",
                             str(args.max_seconds)], args.timeout, args.memory_limit_gib,
                            xla_flags=with_xla_flags(XLA_FLAGS_BY_IMPL.get(impl, "")))
        row = {"impl": impl, "n": n, "d": d, **result}
        if impl in XLA_FLAGS_BY_IMPL:
          row["xla_flags"] = XLA_FLAGS_BY_IMPL[impl]
        if exact is not None and row.get("value") is not None:
          row["relative_error"] = abs(row["value"] - exact) / abs(exact)
        rows.append(row)
        shown = f"{row['seconds']:.4g} s" if row["status"] == "ok" else row["status"]
        print(f"d={d:4d} n={n:6d} {impl:16s} {shown}", flush=True)
      by_impl = {r["impl"]: r for r in rows if r["n"] == n and r["d"] == d and r["status"] == "ok"}
      for r in rows:
        if r["n"] == n and r["d"] == d and r["status"] == "ok":
          for key, base in (("vs_reference", "torch-reference"), ("vs_yardstick", "yardstick")):
            if base in by_impl:
              r[key] = by_impl[base]["seconds"] / r["seconds"]

  import jax

  tables = "\n\n".join(_markdown(rows, d) for d in args.d)
  write_results(args.out, "mmd_throughput", rows, tables,
                devices=[str(dev) for dev in jax.devices()])
  from gapmmd_jax import plotting

  if plotting.seconds_by_size(rows, "impl", IMPLEMENTATIONS, "MMD$^2$, d = {d}",
                              pathlib.Path(args.out) / "mmd_throughput.png"):
    print(f"and {args.out}/mmd_throughput.png")
  return 0


if __name__ == "__main__":
  sys.exit(main())

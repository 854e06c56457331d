"""MMD throughput: the (n + m)^2 kernel hot path, side by side with other implementations.

Every (implementation, n, d) cell runs in its own process (so one's memory
and threads cannot disturb another's), on the same float32 data (x ~ N(0, 1),
y ~ N(0.1, 1), n = m rows of d features, seeded), with 2 CPU threads, or on
the GPU where one is present (JAX and PyTorch alike; memory is then the
device's peak, inputs included, instead of the host's extra RSS). A cell
compiles / warms up once, then repeats until 20 calls or 10 s, and reports
the median with ``block_until_ready``. Out of memory (the parent kills a
child above ``--memory-limit-gib``) and time-outs are reported as such.

Modes (``--modes``): ``forward`` times MMD^2 alone; ``value-and-grad`` times
MMD^2 and its gradient with respect to both samples, as a training step needs
them (``jax.value_and_grad``; PyTorch and pykeops through autograd, the
bandwidth's own gradient included everywhere). Each gradient is checked
against a float64 one through its projection on a fixed random direction.

Implementations:
  ours-auto, ours-full, ours-tiled  gapmmd_jax.mmd2 (automatic, one full matrix, tiles of 1024)
  ours-auto-ynn-off   ours-auto with XLA's default YNNPACK reduce fusion turned off
  ours-auto-ynn-dots  ours-auto under the --ynn-dots flag the train steps opt into
  jax-naive        the reference code ported to JAX as written ([N, N, d] differences)
  torch-reference  the widely copied PyTorch mmd_rbf, step by step
  torch-gram       PyTorch with the Gram matrix (one matmul) instead of differences
  pykeops          KeOps symbolic reduction (only where pykeops is installed)
  yardstick        a plain jitted Z @ Z.T of the same N (the machine's matmul speed;
                   forward mode only)

  gapmmd bench mmd                   # the sweep: n in 256..65536, d in 2, 64, 512
  gapmmd bench mmd --n 1024 --d 64 --impls ours-auto torch-reference
  gapmmd bench mmd --n 1024 4096 --d 64 --modes forward value-and-grad \
      --impls ours-auto torch-gram   # the gradient next to the forward pass
Writes JSON, markdown and a log-log PNG to --out (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import sys
import time
from typing import NamedTuple

import numpy as np

from gapmmd_jax._xla_flags import YNN_DOTS, with_xla_flags
from gapmmd_jax.benchmarks._cells import (
  non_negative_int,
  positive_float,
  positive_int,
  run_cell,
  write_results,
)

IMPLEMENTATIONS = (
  "ours-auto",
  "ours-full",
  "ours-tiled",
  "ours-auto-ynn-off",
  "ours-auto-ynn-dots",
  "jax-naive",
  "torch-reference",
  "torch-gram",
  "pykeops",
  "yardstick",
)
# Cells run under XLA flags of their own (appended to $XLA_FLAGS); jaxlib 0.10's
# CPU backend fuses reductions into YNNPACK by default, which "-reduce" undoes.
XLA_FLAGS_BY_IMPL = {
  "ours-auto-ynn-off": "--xla_cpu_experimental_ynn_fusion_type=-reduce",
  "ours-auto-ynn-dots": YNN_DOTS,
}
KERNEL_MUL, KERNEL_NUM = 2.0, 5
MAX_REPEATS = 20
MODES = ("forward", "value-and-grad")
FORWARD_ONLY = ("yardstick",)


def make_data(n: int, d: int, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(0)
  x = rng.standard_normal((n, d)).astype(dtype)
  y = (rng.standard_normal((n, d)) + 0.1).astype(dtype)
  return x, y


def gradient_projection(grad_x, grad_y) -> float:
  """``<grad_x, u> + <grad_y, v>`` in float64 for fixed random ``u, v`` ``[n, d]``: one
  number per gradient that any error in it moves, comparable across implementations."""
  grad_x, grad_y = np.asarray(grad_x, np.float64), np.asarray(grad_y, np.float64)
  rng = np.random.default_rng(1)
  u, v = rng.standard_normal(grad_x.shape), rng.standard_normal(grad_y.shape)
  return float(np.sum(grad_x * u) + np.sum(grad_y * v))


# ---------- implementations (each returns a zero-argument callable and a sync) ----------


def _jax_impl(name: str, x: np.ndarray, y: np.ndarray, mode: str):
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
      k = sum(jnp.exp(-l2 / (bandwidth * KERNEL_MUL**i)) for i in range(KERNEL_NUM))
      n = a.shape[0]
      return jnp.mean(k[:n, :n] + k[n:, n:] - k[:n, n:] - k[n:, :n])

    loss = naive
  else:
    block = {"ours-full": 1 << 30, "ours-tiled": 1024}.get(name)  # None: automatic
    loss = lambda a, b: gapmmd_jax.mmd2(
      a, b, kernel_mul=KERNEL_MUL, kernel_num=KERNEL_NUM, block_size=block
    )
  if mode == "value-and-grad":  # (value, (grad_x, grad_y))
    f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  else:
    f = jax.jit(loss)
  return lambda: f(xj, yj), jax.block_until_ready


def _torch_impl(name: str, x: np.ndarray, y: np.ndarray, mode: str):
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
    bandwidth = torch.sum(l2) / (count**2 - count) / (KERNEL_MUL ** (KERNEL_NUM // 2))
    k = sum(torch.exp(-l2 / (bandwidth * KERNEL_MUL**i)) for i in range(KERNEL_NUM))
    return torch.mean(k[:n, :n] + k[n:, n:] - k[:n, n:] - k[n:, :n])

  def gram(source, target):
    n = source.shape[0]
    total = torch.cat([source, target], dim=0)
    total = total - total.mean(0)
    count = total.shape[0]
    sq = (total * total).sum(1)
    l2 = (sq[:, None] + sq[None, :] - 2.0 * total @ total.T).clamp_min_(0.0)
    bandwidth = 2.0 * count * sq.sum() / (count**2 - count) / (KERNEL_MUL ** (KERNEL_NUM // 2))
    k = sum(torch.exp(-l2 / (bandwidth * KERNEL_MUL**i)) for i in range(KERNEL_NUM))
    return k[:n, :n].mean() + k[n:, n:].mean() - 2.0 * k[:n, n:].mean()

  fn = reference if name == "torch-reference" else gram
  return _torch_runner(fn, xt, yt, mode), _torch_sync


def _torch_runner(fn, xt, yt, mode: str):
  """A zero-argument call of ``fn(xt, yt)``: its value, or ``(value, (grad_x, grad_y))``."""
  import torch

  if mode == "forward":

    def run():
      with torch.no_grad():
        return fn(xt, yt)

    return run

  def run_with_gradient():
    a, b = xt.detach().requires_grad_(), yt.detach().requires_grad_()
    value = fn(a, b)
    return value.detach(), torch.autograd.grad(value, (a, b))

  return run_with_gradient


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


def _keops_impl(x: np.ndarray, y: np.ndarray, mode: str):
  import torch
  from pykeops.torch import LazyTensor

  torch.set_num_threads(2)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
  n = x.shape[0]
  weights = torch.cat([torch.full((n, 1), 1.0 / n), torch.full((len(y), 1), -1.0 / len(y))])
  weights = weights.to(device)

  def biased_mmd2(source, target):
    centred = torch.cat([source, target])
    centred = centred - centred.mean(0)
    count = centred.shape[0]
    bandwidth = 2.0 * count * (centred**2).sum() / (count**2 - count)
    bandwidth = bandwidth / KERNEL_MUL ** (KERNEL_NUM // 2)
    # The bandwidth enters as a scaling of the points (a LazyTensor takes no 0-d tensor), so
    # its gradient flows as in the other implementations.
    k = 0.0
    for i in range(KERNEL_NUM):
      scaled = centred / torch.sqrt(bandwidth * KERNEL_MUL**i)
      zi, zj = LazyTensor(scaled[:, None, :]), LazyTensor(scaled[None, :, :])
      k = k + (-((zi - zj) ** 2).sum(-1)).exp()
    return (weights * (k @ weights)).sum()  # w^T K w = biased MMD^2

  return _torch_runner(biased_mmd2, xt, yt, mode), _torch_sync


def worker(name: str, n: int, d: int, max_seconds: float, mode: str = "forward") -> dict:
  """Times one cell in this process; returns the measurements."""
  x, y = make_data(n, d)
  base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  if name.startswith("torch"):
    fn, sync = _torch_impl(name, x, y, mode)
  elif name == "pykeops":
    fn, sync = _keops_impl(x, y, mode)
  else:
    fn, sync = _jax_impl(name, x, y, mode)
  start = time.perf_counter()
  value = sync(fn())  # compilation and warm-up
  first = time.perf_counter() - start
  times: list[float] = []
  while not times or (len(times) < MAX_REPEATS and sum(times) + first < max_seconds):
    start = time.perf_counter()
    sync(fn())
    times.append(time.perf_counter() - start)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  accelerator_gib = _accelerator_peak_gib(name)
  memory: dict[str, float | str] = {
    "extra_memory_gib": (peak - base_rss) / 2**20,
    "memory_kind": "host",
  }
  if accelerator_gib is not None:
    memory = {"extra_memory_gib": accelerator_gib, "memory_kind": "accelerator peak"}
  if mode == "value-and-grad":
    value, grads = value
    checks: dict[str, float | None] = {
      "value": float(value),
      "grad_projection": gradient_projection(*grads),
    }
  else:
    checks = {"value": None if name in FORWARD_ONLY else float(value)}
  return {
    "seconds": float(np.median(times)),
    "repeats": len(times),
    "first_call_s": first,
    **memory,
    **checks,
  }


def float64_reference(n: int, d: int, with_gradient: bool) -> dict:
  """MMD^2 of the cell's data in float64 (our tiled path with x64 enabled) and, if asked,
  its gradient's projection (the tests check that gradient against dense autodiff)."""
  import jax

  jax.config.update("jax_enable_x64", True)
  import gapmmd_jax

  x, y = (a.astype(np.float64) for a in make_data(n, d))  # the float32 data, exactly
  loss = lambda a, b: gapmmd_jax.mmd2(a, b, kernel_mul=KERNEL_MUL, kernel_num=KERNEL_NUM)
  if not with_gradient:
    return {"value": float(loss(x, y))}
  value, grads = jax.value_and_grad(loss, argnums=(0, 1))(x, y)
  return {"value": float(value), "grad_projection": gradient_projection(*grads)}


def _run_child(
  args: list[str], timeout: float, memory_limit_gib: float, xla_flags: str | None = None
) -> dict:
  return run_cell(
    "gapmmd_jax.benchmarks.mmd_throughput", args, timeout, memory_limit_gib, xla_flags=xla_flags
  )


class Ratio(NamedTuple):
  """A column of ratios: rows of ``modes`` against the row ``(base_mode, base_impl)`` of the
  same (n, d) (``None``: the row's own mode or implementation)."""

  label: str
  modes: tuple[str, ...]
  base_mode: str | None
  base_impl: str | None


RATIOS = {
  "vs_reference": Ratio("ref", MODES, None, "torch-reference"),
  "vs_gram": Ratio("gram", MODES, None, "torch-gram"),
  "vs_yardstick": Ratio("yardstick", ("forward",), "forward", "yardstick"),
  "vs_forward": Ratio("of its forward", ("value-and-grad",), "forward", None),
}


def add_ratios(rows: list[dict]) -> None:
  """Adds to each finished row its speed-up over the PyTorch reference and Gram code in the
  same mode and (forward rows) over the yardstick, and (gradient rows) its cost in forward
  passes of the same implementation: ``row["vs_..."]`` for the columns of ``RATIOS``."""
  done = {(r["mode"], r["impl"], r["n"], r["d"]): r for r in rows if r["status"] == "ok"}
  for (mode, impl, n, d), row in done.items():
    if impl in FORWARD_ONLY:  # the yardstick is a base, not a contender
      continue
    for key, ratio in RATIOS.items():
      base = done.get((ratio.base_mode or mode, ratio.base_impl or impl, n, d))
      if mode not in ratio.modes or base is None or base is row:
        continue
      row[key] = (
        row["seconds"] / base["seconds"]
        if key == "vs_forward"
        else base["seconds"] / row["seconds"]
      )


def _markdown(rows: list[dict], d: int) -> str:
  sizes = sorted({r["n"] for r in rows if r["d"] == d})
  series = [
    (m, i)
    for i in IMPLEMENTATIONS
    for m in MODES
    if any(r["impl"] == i and r["mode"] == m and r["d"] == d for r in rows)
  ]
  lines = [
    f"d = {d}: median seconds (speed-up vs the PyTorch reference (ref) and Gram-matrix "
    "(gram) code in the same mode and vs the yardstick; a gradient's cost in forward "
    "passes; GiB: extra host memory, or peak device memory on a GPU; relative error of "
    "the value and the gradient's projection vs float64)",
    "",
    "| implementation | " + " | ".join(f"n = {n}" for n in sizes) + " |",
    "| --- |" + " --- |" * len(sizes),
  ]
  for mode, impl in series:
    cells = []
    for n in sizes:
      r = next(
        (r for r in rows if (r["mode"], r["impl"], r["n"], r["d"]) == (mode, impl, n, d)), None
      )
      if r is None:
        cells.append("")
      elif r["status"] != "ok":
        cells.append(r["status"])
      else:
        ratios = [f"{ratio.label} {r[key]:.3g}x" for key, ratio in RATIOS.items() if r.get(key)]
        notes = [", ".join(ratios), f"{r['extra_memory_gib']:.2f} GiB"]
        errors = [
          f"{r[k]:.1e}" for k in ("relative_error", "grad_relative_error") if r.get(k) is not None
        ]
        if errors:
          notes.append("err " + " / ".join(errors))
        cells.append(f"{r['seconds']:.3g} s ({'; '.join(note for note in notes if note)})")
    lines.append(f"| {_series_name(mode, impl)} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _series_name(mode: str, impl: str) -> str:
  return impl if mode == "forward" else f"{impl}, value+grad"


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="gapmmd bench mmd",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
    allow_abbrev=False,
  )
  parser.add_argument(
    "--n",
    type=positive_int,
    nargs="+",
    default=[256, 1024, 4096, 16384, 65536],
    help="samples per set (n = m)",
  )
  parser.add_argument(
    "--d", type=positive_int, nargs="+", default=[2, 64, 512], help="feature dimensions"
  )
  parser.add_argument(
    "--impls",
    nargs="+",
    choices=IMPLEMENTATIONS,
    default=list(IMPLEMENTATIONS),
    help="implementations to run",
  )
  parser.add_argument(
    "--modes",
    nargs="+",
    choices=MODES,
    default=["forward"],
    help="what each implementation computes: MMD^2 (forward) and / or MMD^2 "
    "with its gradient (value-and-grad)",
  )
  parser.add_argument("--timeout", type=positive_float, default=180.0, help="seconds per cell")
  parser.add_argument(
    "--max-seconds",
    type=positive_float,
    default=10.0,
    help="stop repeating a cell after this many seconds",
  )
  parser.add_argument(
    "--memory-limit-gib",
    type=positive_float,
    default=16.0,
    help="kill a cell whose resident memory exceeds this",
  )
  parser.add_argument(
    "--float64-max-n",
    type=non_negative_int,
    default=16384,
    help="largest n for which the float64 reference is computed",
  )
  parser.add_argument("--out", default="benchmarks/results", help="output directory")
  parser.add_argument(
    "--worker", nargs=4, metavar=("IMPL", "N", "D", "MODE"), help=argparse.SUPPRESS
  )
  parser.add_argument(
    "--float64", nargs=3, type=int, metavar=("N", "D", "GRADIENT"), help=argparse.SUPPRESS
  )
  args = parser.parse_args(argv)
  if args.worker:
    name, n, d, mode = args.worker
    print(json.dumps(worker(name, int(n), int(d), args.max_seconds, mode)))
    return 0
  if args.float64:
    n, d, with_gradient = args.float64
    print(json.dumps(float64_reference(n, d, bool(with_gradient))))
    return 0

  cells = [
    (mode, impl)
    for mode in args.modes
    for impl in args.impls
    if mode == "forward" or impl not in FORWARD_ONLY
  ]
  with_gradient = "value-and-grad" in args.modes
  rows = []
  for d in args.d:
    for n in args.n:
      exact = {}
      if n <= args.float64_max_n:
        exact = _run_child(
          ["--float64", str(n), str(d), str(int(with_gradient))],
          10 * args.timeout,
          args.memory_limit_gib,
        )
      for mode, impl in cells:
        result = _run_child(
          ["--worker", impl, str(n), str(d), mode, "--max-seconds", str(args.max_seconds)],
          args.timeout,
          args.memory_limit_gib,
          xla_flags=with_xla_flags(XLA_FLAGS_BY_IMPL.get(impl, "")),
        )
        row = {
          "impl": impl,
          "mode": mode,
          "series": _series_name(mode, impl),
          "n": n,
          "d": d,
          **result,
        }
        if impl in XLA_FLAGS_BY_IMPL:
          row["xla_flags"] = XLA_FLAGS_BY_IMPL[impl]
        for key, error_key in (
          ("value", "relative_error"),
          ("grad_projection", "grad_relative_error"),
        ):
          if exact.get(key) is not None and row.get(key) is not None:
            row[error_key] = abs(row[key] - exact[key]) / abs(exact[key])
        rows.append(row)
        shown = f"{row['seconds']:.4g} s" if row["status"] == "ok" else row["status"]
        print(f"d={d:4d} n={n:6d} {row['series']:30s} {shown}", flush=True)
  add_ratios(rows)

  import jax

  tables = "\n\n".join(_markdown(rows, d) for d in args.d)
  write_results(
    args.out, "mmd_throughput", rows, tables, devices=[str(dev) for dev in jax.devices()]
  )
  from gapmmd_jax import plotting

  series = [_series_name(mode, impl) for impl in IMPLEMENTATIONS for mode in MODES]
  if plotting.seconds_by_size(
    rows, "series", series, "MMD$^2$, d = {d}", pathlib.Path(args.out) / "mmd_throughput.png"
  ):
    print(f"and {args.out}/mmd_throughput.png")
  return 0


if __name__ == "__main__":
  sys.exit(main())

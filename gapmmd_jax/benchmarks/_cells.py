"""Benchmark cells, each run in its own process so that memory and threads stay separate."""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import subprocess
import sys
import threading
import time


def positive_int(text: str) -> int:
  """argparse type: an integer >= 1."""
  return _number(text, int, 1)


def non_negative_int(text: str) -> int:
  """argparse type: an integer >= 0."""
  return _number(text, int, 0)


def positive_float(text: str) -> float:
  """argparse type: a finite number > 0."""
  value = _number(text, float, 0.0)
  if value == 0:
    raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
  return value


def _number(text: str, kind: type, minimum: float):
  try:
    value = kind(text)
  except ValueError:
    raise argparse.ArgumentTypeError(
      f"must be {'an integer' if kind is int else 'a number'}, got {text!r}"
    ) from None
  if not math.isfinite(value) or value < minimum:
    raise argparse.ArgumentTypeError(f"must be >= {minimum} and finite, got {text!r}")
  return value


def run_cell(
  module: str,
  args: list[str],
  timeout: float,
  memory_limit_gib: float = 16.0,
  xla_flags: str | None = None,
) -> dict:
  """Runs ``python -m module *args`` with 2 threads; kills it past ``timeout`` or
  ``memory_limit_gib`` resident. Returns ``{"status": "ok", **<its last stdout line as JSON>}``
  or ``{"status": <why not>}`` (out of memory, time-out, not installed, failed)."""
  env = dict(
    os.environ,
    OMP_NUM_THREADS="2",
    MKL_NUM_THREADS="2",
    XLA_FLAGS=os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags,
  )
  proc = subprocess.Popen(
    [sys.executable, "-m", module, *args],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    env=env,
  )
  killed = {}

  def watch():
    status = pathlib.Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
      try:
        rss_kib = next(
          int(line.split()[1])
          for line in status.read_text().splitlines()
          if line.startswith("VmRSS")
        )
      except (OSError, StopIteration):
        return
      if rss_kib > memory_limit_gib * 2**20:
        killed["reason"] = f"out of memory (> {memory_limit_gib:g} GiB)"
        proc.kill()
        return
      time.sleep(0.05)

  watcher = threading.Thread(target=watch, daemon=True)
  watcher.start()
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.communicate()
    return {"status": f"time-out (> {timeout:g} s)"}
  watcher.join()
  if "reason" in killed:
    return {"status": killed["reason"]}
  if proc.returncode != 0:
    memory_words = (
      "out of memory",
      "can't allocate",
      "resource_exhausted",
      "bad_alloc",
      "memoryerror",
    )
    if any(word in err.lower() for word in memory_words) or proc.returncode == -9:
      return {"status": "out of memory"}
    if "No module named" in err:
      return {"status": "not installed: " + err.strip().splitlines()[-1]}
    errors = [line for line in err.splitlines() if "Error" in line] or err.splitlines() or ["?"]
    return {"status": "failed: " + errors[-1].strip()[:200]}
  return {"status": "ok", **json.loads(out.strip().splitlines()[-1])}


def write_results(out: str | pathlib.Path, name: str, rows: list[dict], table: str, **meta) -> None:
  """Writes ``name.json`` (the rows and the run's metadata) and ``name.md`` (``table``) to
  ``out`` and prints the table."""
  import jax

  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  meta = {
    "date": time.strftime("%Y-%m-%d"),
    "cpu_count": os.cpu_count(),
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    **meta,
    "argv": sys.argv[1:],
  }
  (out / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
  (out / f"{name}.md").write_text(table + "\n")
  print("\n" + table + f"\n\nwritten to {out}/{name}.{{json,md}}")

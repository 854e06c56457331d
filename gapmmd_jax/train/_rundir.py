"""The run directory: config, metrics as JSON lines, checkpoints, summary, plots."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
from typing import Any

import flax.serialization
import jax
import numpy as np

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.msgpack"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "curves.png"
README_FILE = "README.txt"

_FILE_DESCRIPTIONS = {
  CONFIG_FILE: "the resolved config of the run (every option, after overrides)",
  METRICS_FILE: "one JSON object per line: step, seed, split (train/eval) and metrics",
  CHECKPOINT_FILE: "latest training state of every seed (flax msgpack), for --resume",
  SUMMARY_FILE: "final metrics per seed with mean and std, timing, devices",
  CURVES_FILE: "training loss and evaluation metrics against step, one line per seed",
}


def resolve_run_dir(out_dir: str, run_name: str | None, prefix: str, resume: bool) -> pathlib.Path:
  """The run directory: named, the newest ``prefix-*`` when resuming, or a new stamped one."""
  root = pathlib.Path(out_dir)
  if run_name is not None:
    return root / run_name
  if resume:
    candidates = sorted(p for p in root.glob(f"{prefix}-*") if (p / CHECKPOINT_FILE).is_file())
    if not candidates:
      raise FileNotFoundError(
        f"--resume: no run directory {root}/{prefix}-* with a {CHECKPOINT_FILE}; pass --run-name."
      )
    return candidates[-1]
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  return root / f"{prefix}-{stamp}"


def _is_writer() -> bool:
  return jax.process_index() == 0


def _atomic_write(path: pathlib.Path, payload: bytes) -> None:
  partial = path.with_name(path.name + ".partial")
  with open(partial, "wb") as f:
    f.write(payload)
    f.flush()
    os.fsync(f.fileno())
  os.replace(partial, path)


def _jsonable(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (np.generic, np.ndarray)):
    return value.tolist()
  return value


class RunDir:
  """Writes the files of one run (only on process 0 of a multi-host job)."""

  def __init__(self, path: pathlib.Path, extra_descriptions: dict[str, str] | None = None):
    self.path = pathlib.Path(path)
    self.descriptions = {**_FILE_DESCRIPTIONS, **(extra_descriptions or {})}
    if _is_writer():
      self.path.mkdir(parents=True, exist_ok=True)

  def file(self, name: str) -> pathlib.Path:
    return self.path / name

  def write_json(self, name: str, value: Any) -> None:
    if _is_writer():
      _atomic_write(self.file(name), json.dumps(_jsonable(value), indent=2).encode())

  def read_json(self, name: str) -> Any:
    return json.loads(self.file(name).read_text())

  def append_metrics(self, rows: list[dict]) -> None:
    if _is_writer() and rows:
      with open(self.file(METRICS_FILE), "a") as f:
        for row in rows:
          f.write(json.dumps(_jsonable(row)) + "\n")

  def read_metrics(self) -> list[dict]:
    path = self.file(METRICS_FILE)
    if not path.is_file():
      return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

  def truncate_metrics(self, last_step: int) -> None:
    """Drops metric rows after ``last_step`` (written after the checkpoint we resume)."""
    if _is_writer():
      kept = [r for r in self.read_metrics() if r["step"] <= last_step]
      _atomic_write(self.file(METRICS_FILE), "".join(json.dumps(r) + "\n" for r in kept).encode())

  def save_checkpoint(self, state: Any) -> None:
    """Saves a pytree of host arrays, leaves keyed by their tree path."""
    if _is_writer():
      leaves = jax.tree_util.tree_flatten_with_path(state)[0]
      payload = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}
      _atomic_write(self.file(CHECKPOINT_FILE), flax.serialization.msgpack_serialize(payload))

  def load_checkpoint(self, template: Any) -> Any:
    """Restores into the structure of ``template``, checking every shape and dtype."""
    saved = flax.serialization.msgpack_restore(self.file(CHECKPOINT_FILE).read_bytes())
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    restored = []
    for path, leaf in leaves:
      name = jax.tree_util.keystr(path)
      value = saved.get(name)
      if value is None or value.shape != np.shape(leaf) or value.dtype != np.asarray(leaf).dtype:
        found = "missing" if value is None else f"{value.shape} {value.dtype}"
        raise ValueError(
          f"checkpoint {self.file(CHECKPOINT_FILE)} does not match the model: "
          f"{name} expected {np.shape(leaf)} {np.asarray(leaf).dtype}, found {found}."
        )
      restored.append(value)
    return jax.tree_util.tree_unflatten(treedef, restored)

  def write_readme(self, title: str) -> None:
    if not _is_writer():
      return
    lines = [title, "", "Files in this run directory:"]
    present = sorted(p.name for p in self.path.iterdir() if not p.name.endswith(".partial"))
    for name in present:
      if name != README_FILE:
        lines.append(f"  {name}: {self.descriptions.get(name, 'output of the experiment')}")
    self.file(README_FILE).write_text("\n".join(lines) + "\n")

"""Options shared by every experiment's config."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from gapmmd_jax.config import check_finite, option


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Loop, seeds, data and output options; experiments subclass this."""

  RESUMABLE: ClassVar[tuple[str, ...]] = ()  # this config's fields --resume may change too

  seeds: tuple[int, ...] = option(
    (0,), "independent replicas trained together in one compiled step"
  )
  batch_size: int = option(128, "global batch size per seed (split across devices)")
  epochs: float = option(1.0, "passes over the training set (fractions allowed)")
  max_train_examples: int | None = option(None, "use only the first N training examples")
  max_eval_examples: int | None = option(None, "use only the first N test examples")
  shuffle: bool = option(
    True,
    "draw a new order of the training examples per epoch and seed (else every epoch takes "
    "them in their stored order, as the official IIC code's loaders)",
  )
  eval_batch_size: int = option(1000, "examples per evaluation batch")
  eval_every: int = option(500, "evaluate every N steps (and at the end)")
  log_every: int = option(50, "write training metrics every N steps")
  checkpoint_every: int = option(1000, "checkpoint every N steps (and at the end)")
  out_dir: str = option("runs", "parent directory of run directories")
  run_name: str | None = option(None, "run directory name (default: experiment-variant-seeds)")
  resume: bool = option(
    False,
    "continue the run in the run directory from its checkpoint, with its config but for "
    "options that change no training (cadence of logs and checkpoints, paths, XLA); a "
    "--run-name without a checkpoint starts there, so one command starts and continues a "
    "long run",
  )
  stop_after: int | None = option(
    None, "stop after N steps of this invocation (checkpointed); continue with --resume"
  )
  data_dir: str | None = option(None, "directory with the MNIST IDX files (else $GAPMMD_DATA_DIR)")
  progress: bool = option(True, "show a progress bar")
  seed_axis: Literal["auto", "vmap", "unroll"] = option(
    "auto",
    "how seeds share one compiled step: vmap (batched) or unroll (one after "
    "another inside the step: much faster for convolutions on CPU); auto: unroll on CPU",
  )
  steps_per_call: int = option(
    1,
    "training steps per jitted call (a loop on the device; calls "
    "end at log, eval and checkpoint steps): fewer Python "
    "dispatches for small, fast steps",
  )

  def __post_init__(self):
    check_finite(self)
    if not self.seeds or len(set(self.seeds)) != len(self.seeds):
      raise ValueError(f"seeds must be distinct and non-empty, got {self.seeds}.")
    for name in (
      "batch_size",
      "eval_batch_size",
      "eval_every",
      "log_every",
      "checkpoint_every",
      "steps_per_call",
    ):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
    if self.epochs <= 0:
      raise ValueError(f"epochs must be > 0, got {self.epochs}.")


# Fields that may differ between a run and its resumption: none changes what is trained (a run
# directory renamed or moved continues under its new --run-name / --out-dir; the training
# metrics and checkpoints may be written at another cadence). An experiment's config adds its
# own in ``RESUMABLE`` (e.g. how often a probe that leaves the training state alone runs).
RESUMABLE_FIELDS = (
  "resume",
  "run_name",
  "stop_after",
  "progress",
  "out_dir",
  "data_dir",
  "seed_axis",
  "steps_per_call",
  "log_every",
  "checkpoint_every",
  "xla_flags",
)

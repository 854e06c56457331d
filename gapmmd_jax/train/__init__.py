"""The shared training harness: configs, the loop, the run directory."""

from gapmmd_jax.train._config import TrainConfig
from gapmmd_jax.train._harness import (
  NonFiniteError,
  Result,
  Task,
  data_mesh,
  fit,
  num_steps,
  seeds_tag,
)
from gapmmd_jax.train._rundir import RunDir
from gapmmd_jax.train._stop import StopRequested, request_stop, stop_on_signals, stop_signal

__all__ = [
  "NonFiniteError",
  "Result",
  "RunDir",
  "StopRequested",
  "Task",
  "TrainConfig",
  "data_mesh",
  "fit",
  "num_steps",
  "request_stop",
  "seeds_tag",
  "stop_on_signals",
  "stop_signal",
]

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

__all__ = [
  "NonFiniteError",
  "Result",
  "RunDir",
  "Task",
  "TrainConfig",
  "data_mesh",
  "fit",
  "num_steps",
  "seeds_tag",
]

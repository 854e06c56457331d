"""The shared training harness: configs, the loop, the run directory."""

from gapmmd_jax.train._config import TrainConfig
from gapmmd_jax.train._harness import Result, Task, data_mesh, fit
from gapmmd_jax.train._rundir import RunDir, plot_curves

__all__ = ["Result", "RunDir", "Task", "TrainConfig", "data_mesh", "fit", "plot_curves"]

"""The experiments, each a module with ``NAME``, ``Config``, ``VARIANTS``,
``DEFAULT_VARIANT`` and ``run``."""

from gapmmd_jax.experiments import gap_mmd, metric_survey

EXPERIMENTS = {module.NAME: module for module in (gap_mmd, metric_survey)}

__all__ = ["EXPERIMENTS", "gap_mmd", "metric_survey"]

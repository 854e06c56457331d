"""The experiments, each a module with ``NAME``, ``Config``, ``VARIANTS``,
``DEFAULT_VARIANT`` and ``run``."""

from gapmmd_jax.experiments import adapt, gap_mmd, iic, metric_survey, mine, mine_cluster, vat

EXPERIMENTS = {
  module.NAME: module for module in (gap_mmd, metric_survey, adapt, iic, mine, mine_cluster, vat)
}

__all__ = ["EXPERIMENTS", "adapt", "gap_mmd", "iic", "metric_survey", "mine", "mine_cluster", "vat"]

"""The experiments, each a module with ``NAME``, ``Config``, ``VARIANTS``,
``DEFAULT_VARIANT``, ``build_task`` and ``run``."""

from gapmmd_jax.experiments import gap_mmd

EXPERIMENTS = {module.NAME: module for module in (gap_mmd,)}

__all__ = ["EXPERIMENTS", "gap_mmd"]

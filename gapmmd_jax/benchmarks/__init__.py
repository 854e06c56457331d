"""Benchmarks runnable as ``gapmmd bench NAME`` or ``python -m gapmmd_jax.benchmarks.NAME``."""

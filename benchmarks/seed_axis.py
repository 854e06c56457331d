"""Seed-axis benchmark: same as ``gapmmd bench seed-axis`` (see its --help)."""

import sys

from gapmmd_jax.benchmarks.seed_axis import main

if __name__ == "__main__":
  sys.exit(main())

"""MMD throughput benchmark: same as ``gapmmd bench mmd`` (see its --help)."""

import sys

from gapmmd_jax.benchmarks.mmd_throughput import main

if __name__ == "__main__":
  sys.exit(main())

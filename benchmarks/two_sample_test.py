"""Two-sample test benchmark: same as ``gapmmd bench test`` (see its --help)."""

import sys

from gapmmd_jax.benchmarks.two_sample_test import main

if __name__ == "__main__":
  sys.exit(main())

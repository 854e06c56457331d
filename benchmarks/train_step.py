"""Train-step throughput benchmark: same as ``gapmmd bench train`` (see its --help)."""

import sys

from gapmmd_jax.benchmarks.train_step import main

if __name__ == "__main__":
  sys.exit(main())

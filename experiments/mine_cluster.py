"""Experiment 4c, MINE clustering of MNIST: same as ``gapmmd mine-cluster``."""

import sys

from gapmmd_jax.cli import main

if __name__ == "__main__":
  sys.exit(main(["mine-cluster", *sys.argv[1:]]))

"""Experiment 4a, IIC clustering of MNIST: same as ``gapmmd iic``."""

import sys

from gapmmd_jax.cli import main

if __name__ == "__main__":
  sys.exit(main(["iic", *sys.argv[1:]]))

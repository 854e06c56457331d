"""Experiment 3, domain adaptation MNIST -> MNIST-M: same as ``gapmmd adapt``."""

import sys

from gapmmd_jax.cli import main

if __name__ == "__main__":
  sys.exit(main(["adapt", *sys.argv[1:]]))

"""Experiment 4b, MINE on bivariate Gaussians: same as ``gapmmd mine``."""

import sys

from gapmmd_jax.cli import main

if __name__ == "__main__":
  sys.exit(main(["mine", *sys.argv[1:]]))

"""Experiment 1, GAP-LeNet and the class gap: same as ``gapmmd gap-mmd``."""

import sys

from gapmmd_jax.cli import main

if __name__ == "__main__":
  sys.exit(main(["gap-mmd", *sys.argv[1:]]))

"""Experiment 2, the survey of distances: same as ``gapmmd metric-survey``."""

import sys

from gapmmd_jax.cli import main

if __name__ == "__main__":
  sys.exit(main(["metric-survey", *sys.argv[1:]]))

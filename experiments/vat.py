"""Experiment 5, virtual adversarial training: same as ``gapmmd vat``."""

import sys

from gapmmd_jax.cli import main

if __name__ == "__main__":
  sys.exit(main(["vat", *sys.argv[1:]]))

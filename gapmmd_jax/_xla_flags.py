"""XLA options a user can opt into; the library never sets them on import."""

from __future__ import annotations

import os

# XLA's CPU backend runs dots, including the weight gradients of convolutions,
# through YNNPACK: 1.8-3.5x faster VAT and DANN train steps on the 2-core
# development machine, slower GAP-LeNet ones (README, "Train-step throughput").
# Experimental in jaxlib 0.10, hence opt-in.
YNN_DOTS = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"


def with_xla_flags(*flags: str, base: str | None = None) -> str:
  """``base`` (default: ``$XLA_FLAGS``) with ``flags`` appended, space-separated, no repeats."""
  words = (os.environ.get("XLA_FLAGS", "") if base is None else base).split()
  return " ".join(words + [flag for flag in flags if flag and flag not in words])

"""Flax NNX models of the experiments."""

from gapmmd_jax.models._gap_lenet import GapLeNet

__all__ = ["GapLeNet"]

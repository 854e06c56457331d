"""Differentiable operators with custom derivatives."""

from gapmmd_jax.ops._grad_reverse import gradient_reversal

__all__ = ["gradient_reversal"]

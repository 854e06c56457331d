"""Gradient reversal layer (Ganin & Lempitsky 2015)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def gradient_reversal(x: jax.typing.ArrayLike, lam: jax.typing.ArrayLike) -> jax.Array:
  r"""Identity on the forward pass; multiplies the gradient by ``-lam`` backward.

  .. math:: \mathrm{GRL}(x) = x,\quad \partial \mathrm{GRL}/\partial x = -\lambda I

  ``lam`` is an ordinary (traced) argument, so a schedule such as
  ``2 / (1 + exp(-10 p)) - 1`` changes it every step without recompiling. No
  gradient flows to ``lam``.

  Args:
    x: array of any shape (features entering the domain classifier).
    lam: scalar reversal strength.

  Returns:
    ``x`` unchanged.

  References:
    Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation",
    ICML 2015.

  Example:
    >>> domain_logits = domain_head(gradient_reversal(features, lam))  # doctest: +SKIP
  """
  return jnp.asarray(x)


def _gradient_reversal_fwd(x, lam):
  return jnp.asarray(x), lam


def _gradient_reversal_bwd(lam, g):
  return (-jnp.asarray(lam, g.dtype) * g, jnp.zeros_like(lam))


gradient_reversal.defvjp(_gradient_reversal_fwd, _gradient_reversal_bwd)

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
  gradient flows to ``lam``. Reverse mode only (a ``jax.custom_vjp``): ``jax.jvp`` and
  ``jax.jacfwd`` raise.

  Args:
    x: array of any shape (features entering the domain classifier).
    lam: scalar reversal strength.

  Returns:
    ``x`` unchanged.

  References:
    Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation",
    ICML 2015.

  Example:
    In a model, ``domain_head(gradient_reversal(features, lam))``. The forward
    pass is the identity; the gradient comes back times ``-lam``:

    >>> import jax, jax.numpy as jnp
    >>> from gapmmd_jax import gradient_reversal
    >>> jax.grad(lambda x: jnp.sum(gradient_reversal(x, 0.5) ** 2))(jnp.array([1.0, 2.0]))
    Array([-1., -2.], dtype=float32)
  """
  return jnp.asarray(x)


def _gradient_reversal_fwd(x, lam):
  return jnp.asarray(x), lam


def _gradient_reversal_bwd(lam, g):
  return (-jnp.asarray(lam, g.dtype) * g, jnp.zeros_like(lam))


gradient_reversal.defvjp(_gradient_reversal_fwd, _gradient_reversal_bwd)

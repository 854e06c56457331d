"""Virtual adversarial training (Miyato et al. 2018)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp

from gapmmd_jax import _validation as v

FiniteDifference = Literal["linearized", "direct"]
FINITE_DIFFERENCES: tuple[FiniteDifference, ...] = ("linearized", "direct")


def _key_first(name: str, key, logits_fn, x):
  """``(key, logits_fn, x)``, also from the order of version 0.1, ``(logits_fn, x, key)``,
  which warns."""
  if callable(key) and not callable(logits_fn):
    warnings.warn(
      f"{name}(logits_fn, x, key) is deprecated: pass the key first, "
      f"{name}(key, logits_fn, x), as the two-sample tests take it.",
      DeprecationWarning,
      stacklevel=3,
    )
    key, logits_fn, x = x, key, logits_fn
  if not callable(logits_fn):
    raise TypeError(f"{name}: logits_fn must be callable, got {type(logits_fn).__name__}.")
  return key, logits_fn, x


def _kl_from_logits(p_logits: jax.Array, q_logits: jax.Array) -> jax.Array:
  """``KL(softmax(p) || softmax(q))`` per example ``[B]``, from log-softmax."""
  log_p = jax.nn.log_softmax(p_logits, axis=-1)
  log_q = jax.nn.log_softmax(q_logits, axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


@jax.custom_vjp
def _kl_of_logit_shift(log_p: jax.Array, delta: jax.Array) -> jax.Array:
  r"""``KL(p || softmax(log p + delta))`` per example ``[B]``, accurate for tiny ``delta``.

  .. math:: \mathrm{KL} = c - \textstyle\sum_j p_j \delta_j,\quad
     c = \log(1 + \textstyle\sum_j p_j\,\mathrm{expm1}(\delta_j))

  and its gradient ``q - p = p * expm1(delta - c)`` is formed without
  subtracting two nearly equal probabilities, so a shift of 1e-6 in float32
  still gives a gradient with full relative precision.
  """
  return _kl_of_logit_shift_fwd(log_p, delta)[0]


def _kl_of_logit_shift_fwd(log_p, delta):
  p = jnp.exp(log_p)
  c = jnp.log1p(jnp.sum(p * jnp.expm1(delta), axis=-1))
  return c - jnp.sum(p * delta, axis=-1), (p, delta, c)


def _kl_of_logit_shift_bwd(residuals, g):
  p, delta, c = residuals
  return jnp.zeros_like(p), g[:, None] * p * jnp.expm1(delta - c[:, None])


_kl_of_logit_shift.defvjp(_kl_of_logit_shift_fwd, _kl_of_logit_shift_bwd)


def _unit_per_example(d: jax.Array) -> jax.Array:
  """Scales each example (leading axis) of ``d`` to unit L2 norm, safely."""
  axes = tuple(range(1, d.ndim))
  scale = jnp.max(jnp.abs(d), axis=axes, keepdims=True)
  d = d / jnp.where(scale > 0, scale, 1.0)  # avoids underflow of tiny gradients
  norm = jnp.sqrt(jnp.sum(d * d, axis=axes, keepdims=True))
  return d / jnp.where(norm > 0, norm, 1.0)


def virtual_adversarial_perturbation(
  key: jax.Array,
  logits_fn: Callable[[jax.Array], jax.Array],
  x: jax.typing.ArrayLike,
  *,
  xi: float,
  eps: float,
  num_iterations: int = 1,
  finite_difference: FiniteDifference = "linearized",
) -> jax.Array:
  r"""The virtual adversarial perturbation ``r_adv`` of each example.

  Power iteration on the KL divergence: starting from a random unit ``d``,

  .. math:: d \leftarrow \nabla_r \mathrm{KL}(p(y|x) \,\|\, p(y|x + r))\big|_{r=\xi d},
     \quad r_{adv} = \epsilon\, d / \|d\|_2

  per example, with ``p(y|x)`` held constant. As ``xi -> 0`` the step is a
  product with the KL Hessian, so ``r_adv`` aligns with its top eigenvector.

  ``finite_difference="linearized"`` (default) evaluates the logit shift as
  ``J_f(x) r`` (one ``jax.linearize``), exact to first order and free of the
  float32 cancellation that makes ``f(x + r) - f(x)`` meaningless at
  ``xi = 1e-6`` (the official MNIST setting); the KL gradient is then formed
  as ``p * expm1(shift - c)`` rather than ``q - p``, so it keeps full precision
  too. ``"direct"`` uses ``f(x + r) - f(x)`` as the papers' code does; prefer
  it only for large ``xi``.

  ``logits_fn`` must be pure. For a Flax NNX model with BatchNorm, build a
  temporary module inside it, ``lambda a: nnx.merge(graphdef, params, stats,
  copy=True)(a)``: the perturbed passes then normalise with batch statistics
  but their updates of the running statistics are discarded.

  Args:
    key: PRNG key for the initial direction. (Version 0.1 took it third, after
      ``logits_fn`` and ``x``; that order still works, with a ``DeprecationWarning``.)
    logits_fn: maps ``[B, ...]`` inputs to ``[B, C]`` logits.
    x: ``[B, ...]`` inputs.
    xi: finite-difference step.
    eps: L2 norm of the returned perturbation, per example.
    num_iterations: power iterations (1 in the papers).
    finite_difference: ``"linearized"`` or ``"direct"``.

  Returns:
    ``[B, ...]`` perturbation (gradients stopped), each example of norm ``eps``.

  References:
    Miyato et al., "Virtual Adversarial Training: A Regularization Method for
    Supervised and Semi-Supervised Learning", TPAMI 2018.

  Example:
    >>> import jax
    >>> from gapmmd_jax import virtual_adversarial_perturbation
    >>> w = jax.random.normal(jax.random.key(0), (5, 3))
    >>> x = jax.random.normal(jax.random.key(1), (8, 5))
    >>> r = virtual_adversarial_perturbation(jax.random.key(2), lambda a: a @ w, x, xi=1e-6, eps=2.0)
    >>> r.shape, float(jax.numpy.linalg.norm(r[0]))
    ((8, 5), 2.0)
  """
  key, logits_fn, x = _key_first("virtual_adversarial_perturbation", key, logits_fn, x)
  x = v.as_float_array("x", x)
  if x.ndim < 2:
    raise ValueError(f"x must have shape [B, ...] with a batch axis, got {tuple(x.shape)}.")
  v.check_int("num_iterations", num_iterations, 1)
  v.check_positive("xi", xi)
  v.check_positive("eps", eps)
  v.check_choice("finite_difference", finite_difference, FINITE_DIFFERENCES)
  if finite_difference == "linearized":
    clean, jvp_fn = jax.linearize(logits_fn, x)
    logit_shift = jvp_fn
  else:
    clean = logits_fn(x)
    logit_shift = lambda r: logits_fn(x + r) - clean
  clean = jax.lax.stop_gradient(clean)
  if clean.ndim != 2 or clean.shape[0] != x.shape[0]:
    raise ValueError(
      f"logits_fn must return [B, C] logits for B={x.shape[0]}, got {tuple(clean.shape)}."
    )
  log_p = jax.nn.log_softmax(clean, axis=-1)

  def divergence(r):
    return jnp.sum(_kl_of_logit_shift(log_p, logit_shift(r)))

  d = _unit_per_example(jax.random.normal(key, x.shape, x.dtype))
  for _ in range(num_iterations):
    d = _unit_per_example(jax.grad(divergence)(xi * d))
  return jax.lax.stop_gradient(eps * d)


def vat_loss(
  key: jax.Array,
  logits_fn: Callable[[jax.Array], jax.Array],
  x: jax.typing.ArrayLike,
  *,
  xi: float,
  eps: float,
  num_iterations: int = 1,
  finite_difference: FiniteDifference = "linearized",
) -> jax.Array:
  r"""Local distributional smoothness loss of VAT, averaged over the batch.

  .. math:: \mathcal{L} = \mathrm{mean}_b\, \mathrm{KL}(\mathrm{sg}[p(y|x_b)] \,\|\, p(y|x_b + r_{adv,b}))

  No labels are needed, so it serves semi-supervised training too.

  Args:
    key, logits_fn, x, xi, eps, num_iterations, finite_difference: as
      :func:`virtual_adversarial_perturbation`.

  Returns:
    Scalar loss; gradients flow through ``logits_fn(x + r_adv)`` only.

  References:
    Miyato et al., "Virtual Adversarial Training: A Regularization Method for
    Supervised and Semi-Supervised Learning", TPAMI 2018.

  Example:
    A linear classifier's logits; in training, ``logits_fn`` is the model
    applied with the current parameters (``xi=1e-6, eps=2.0`` as on MNIST):

    >>> import jax
    >>> from gapmmd_jax import vat_loss
    >>> w = jax.random.normal(jax.random.key(0), (5, 3))
    >>> x = jax.random.normal(jax.random.key(1), (8, 5))
    >>> loss = vat_loss(jax.random.key(2), lambda x: x @ w, x, xi=1e-6, eps=2.0)
    >>> float(loss)
    2.86
  """
  key, logits_fn, x = _key_first("vat_loss", key, logits_fn, x)
  x = v.as_float_array("x", x)
  r_adv = virtual_adversarial_perturbation(
    key,
    logits_fn,
    x,
    xi=xi,
    eps=eps,
    num_iterations=num_iterations,
    finite_difference=finite_difference,
  )
  clean = jax.lax.stop_gradient(logits_fn(x))
  return jnp.mean(_kl_from_logits(clean, logits_fn(x + r_adv)))

"""Mutual-information objectives and estimators: IIC, MINE, closed forms."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from gapmmd_jax import _validation as v


def _safe_log(p: jax.Array) -> jax.Array:
  return jnp.log(jnp.maximum(p, jnp.finfo(p.dtype).tiny))


def _mutual_information_of_joint(joint: jax.Array) -> jax.Array:
  """``sum p_ij log(p_ij / (p_i p_j))`` of a normalised ``[C, C']`` joint; 0 log 0 = 0."""
  pi = jnp.sum(joint, axis=1, keepdims=True)
  pj = jnp.sum(joint, axis=0, keepdims=True)
  return jnp.sum(joint * (_safe_log(joint) - _safe_log(pi) - _safe_log(pj)))


def iic_loss(z: jax.typing.ArrayLike, z_bar: jax.typing.ArrayLike) -> jax.Array:
  r"""Negative mutual information of paired cluster assignments (IIC).

  .. math:: P = \mathrm{sym}(\tfrac1B z^T \bar z),\quad
     \mathcal{L} = -\sum_{c,c'} P_{cc'} \log \frac{P_{cc'}}{P_c P_{c'}}

  Args:
    z: ``[B, C]`` softmax outputs for the images.
    z_bar: ``[B, C]`` softmax outputs for their transformed pairs.

  Returns:
    Scalar; its minimum ``-log C`` is reached by confident, uniformly used
    clusters that agree across each pair. A negative or non-finite entry (logits passed
    by mistake, a diverged network) raises ``ValueError`` in an eager call and gives NaN
    under ``jit``.

  References:
    Ji, Henriques & Vedaldi, "Invariant Information Clustering", ICCV 2019.

  Example:
    In training, ``z = softmax(head(x))`` and ``z_bar = softmax(head(augment(x)))``.
    Confident, balanced assignments that agree across the pair reach the
    minimum ``-log C``:

    >>> import jax, jax.numpy as jnp
    >>> from gapmmd_jax import iic_loss
    >>> z = jax.nn.one_hot(jnp.arange(60) % 10, 10)
    >>> float(iic_loss(z, z)), float(-jnp.log(10.0))
    (-2.3026, -2.3026)
  """
  z, z_bar = v.check_paired("z", z, "z_bar", z_bar, "[B, C]")
  for name, p in (("z", z), ("z_bar", z_bar)):
    if not isinstance(p, jax.core.Tracer) and (lowest := float(jnp.min(p))) < 0:
      raise ValueError(
        f"{name} must hold probabilities (e.g. jax.nn.softmax(logits)), got an entry of "
        f"{lowest:.4g}."
      )
  joint = z.T @ z_bar / z.shape[0]
  joint = (joint + joint.T) / 2.0
  joint = joint / jnp.sum(joint)
  valid = jnp.all(jnp.isfinite(z) & (z >= 0)) & jnp.all(jnp.isfinite(z_bar) & (z_bar >= 0))
  return jnp.where(valid, -_mutual_information_of_joint(joint), jnp.nan)


def mine_lower_bound(t_joint: jax.typing.ArrayLike, t_marginal: jax.typing.ArrayLike) -> jax.Array:
  r"""Donsker-Varadhan lower bound on mutual information (MINE).

  .. math:: \hat I = \mathrm{mean}(T_{joint}) - \log \mathrm{mean}(e^{T_{marginal}})

  computed with ``logsumexp`` so statistics of magnitude ``1e3`` stay finite.

  Args:
    t_joint: ``[B]`` statistics on samples of the joint distribution.
    t_marginal: ``[B']`` statistics on samples of the product of marginals.

  Returns:
    Scalar bound (in nats).

  References:
    Belghazi et al., "Mutual Information Neural Estimation", ICML 2018.

  Example:
    Marginal samples by shuffling ``y``; the bound is tight for the optimal
    statistic, the log density ratio, here of a Gaussian pair with
    correlation 0.5 (mutual information ``-log(1 - 0.25) / 2 = 0.144``):

    >>> import jax, jax.numpy as jnp
    >>> from gapmmd_jax import mine_lower_bound
    >>> kx, ke, kp = jax.random.split(jax.random.key(0), 3)
    >>> x = jax.random.normal(kx, (10000,))
    >>> y = 0.5 * x + jnp.sqrt(0.75) * jax.random.normal(ke, (10000,))
    >>> def statistic(a, b):  # log p(a, b) - log p(a) - log p(b)
    ...   return -0.5 * jnp.log(0.75) - (a * a - a * b + b * b) / 1.5 + (a * a + b * b) / 2
    >>> float(mine_lower_bound(statistic(x, y), statistic(x, jax.random.permutation(kp, y))))
    0.148
  """
  t_joint, t_marginal = _check_statistics(t_joint, t_marginal)
  return jnp.mean(t_joint) - _log_mean_exp(t_marginal)


def _check_statistics(t_joint, t_marginal) -> tuple[jax.Array, jax.Array]:
  t_joint = v.as_float_array("t_joint", t_joint)
  t_marginal = v.as_float_array("t_marginal", t_marginal)
  v.check_rank("t_joint", t_joint, 1, "[B]")
  v.check_rank("t_marginal", t_marginal, 1, "[B']")
  if t_joint.shape[0] == 0 or t_marginal.shape[0] == 0:
    raise ValueError(
      f"statistics must be non-empty, got t_joint {tuple(t_joint.shape)} "
      f"and t_marginal {tuple(t_marginal.shape)}."
    )
  return t_joint, t_marginal


def _log_mean_exp(t: jax.Array) -> jax.Array:
  return jax.nn.logsumexp(t) - math.log(t.shape[0])


def mine_bias_corrected_loss(
  t_joint: jax.typing.ArrayLike,
  t_marginal: jax.typing.ArrayLike,
  log_moving_average: jax.typing.ArrayLike,
  *,
  decay: float = 0.01,
) -> tuple[jax.Array, jax.Array]:
  r"""MINE loss whose gradient is the moving-average bias-corrected one.

  The value is ``-mine_lower_bound(t_joint, t_marginal)``; the gradient of the
  second term is :math:`\nabla \mathrm{mean}(e^{T}) / \overline{m}` with
  :math:`\overline{m}` an exponential moving average of
  :math:`\mathrm{mean}(e^{T})` (Belghazi et al. 2018, Algorithm 1), which
  removes the bias of the plain minibatch gradient. The average is kept in log
  space so large statistics cannot overflow.

  Args:
    t_joint: ``[B]``.
    t_marginal: ``[B']``.
    log_moving_average: scalar log of the running average; pass ``-jnp.inf``
      on the first step (the average then starts at this batch's value).
    decay: weight of the new batch in the average.

  Returns:
    ``(loss, new_log_moving_average)``, two scalars.

  References:
    Belghazi et al., "Mutual Information Neural Estimation", ICML 2018.

  Example:
    The moving average is state that the training loop carries from step to step; it
    starts at ``-inf``:

    >>> import jax
    >>> import jax.numpy as jnp
    >>> from gapmmd_jax import mine_bias_corrected_loss
    >>> log_average = -jnp.inf
    >>> for step in range(3):
    ...   t_joint = jax.random.normal(jax.random.key(step), (64,)) + 1.0
    ...   t_marginal = jax.random.normal(jax.random.key(100 + step), (64,))
    ...   loss, log_average = mine_bias_corrected_loss(t_joint, t_marginal, log_average)
    >>> float(loss)
    -0.308
  """
  t_joint, t_marginal = _check_statistics(t_joint, t_marginal)
  if not 0.0 < decay <= 1.0:
    raise ValueError(f"decay must lie in (0, 1], got {decay}.")
  log_batch = _log_mean_exp(t_marginal)
  previous = jnp.asarray(log_moving_average, log_batch.dtype)
  updated = jnp.where(
    jnp.isneginf(previous),
    log_batch,
    jnp.logaddexp(
      math.log1p(-decay) + previous if decay < 1 else -jnp.inf, math.log(decay) + log_batch
    ),
  )
  updated = jax.lax.stop_gradient(updated)
  ratio = jnp.exp(log_batch - updated)  # mean(e^T) / moving average
  corrected = jax.lax.stop_gradient(log_batch) + ratio - jax.lax.stop_gradient(ratio)
  return -(jnp.mean(t_joint) - corrected), updated


def gaussian_mutual_information(rho: jax.typing.ArrayLike) -> jax.Array:
  r"""Mutual information of a bivariate Gaussian with correlation ``rho``, in nats.

  .. math:: I = -\tfrac12 \log(1 - \rho^2)

  Args:
    rho: correlations in ``[-1, 1]``, any shape.

  Returns:
    An array of the shape of ``rho``; ``inf`` at ``|rho| = 1``. A ``rho`` outside
    ``[-1, 1]`` or NaN raises ``ValueError`` in an eager call and gives NaN under ``jit``.

  References:
    Cover & Thomas, "Elements of Information Theory", 2nd ed. 2006, Example 8.5.1.

  Example:
    >>> from gapmmd_jax import gaussian_mutual_information
    >>> float(gaussian_mutual_information(0.8))  # nats
    0.5108
  """
  rho = v.as_float_array("rho", rho)
  known = v.concrete_or_none(rho)
  if known is not None and not np.all(np.abs(known) <= 1):
    raise ValueError(f"rho must lie in [-1, 1], got {known[~(np.abs(known) <= 1)][:5]}.")
  return -0.5 * jnp.log1p(-rho * rho)


def histogram_mutual_information(
  a: jax.typing.ArrayLike, b: jax.typing.ArrayLike, *, bins: int = 64
) -> jax.Array:
  r"""Plug-in mutual information of paired samples from a 2-D histogram, in nats.

  .. math:: \hat I = \sum_{ij} \hat p_{ij} \log \frac{\hat p_{ij}}{\hat p_i \hat p_j}

  over ``bins x bins`` equal-width cells spanning each sample's range. Biased
  upwards for small samples (roughly ``(bins - 1)^2 / (2 n)``).

  Args:
    a: ``[n]``, b: ``[n]`` paired samples.
    bins: cells per axis.

  Returns:
    Scalar; NaN under ``jit`` for a NaN or an infinity in ``a`` or ``b`` (an eager call
    raises ``ValueError``).

  Example:
    >>> import jax
    >>> from gapmmd_jax import histogram_mutual_information
    >>> a = jax.random.normal(jax.random.key(0), (5000,))
    >>> noise = jax.random.normal(jax.random.key(1), (5000,))
    >>> float(histogram_mutual_information(a, a + noise, bins=16))  # true MI: 0.347 nats
    0.343
  """
  a, b = v.check_paired("a", a, "b", b, "[n]")
  v.check_int("bins", bins, 2)
  counts, _, _ = jnp.histogram2d(a, b, bins=bins)
  return v.nan_unless_finite(_mutual_information_of_joint(counts / a.shape[0]), a, b)

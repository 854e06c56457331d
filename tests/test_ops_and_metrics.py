"""Gradient reversal and cluster accuracy."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gapmmd_jax as g


def test_gradient_reversal_forward_identity_and_reversed_gradient():
  x = jax.random.normal(jax.random.key(0), (4, 3))
  np.testing.assert_array_equal(g.gradient_reversal(x, 0.7), x)
  weights = jnp.arange(12.0).reshape(4, 3)
  loss = lambda a, lam: jnp.sum(weights * g.gradient_reversal(a, lam) ** 2)
  grad_x, grad_lam = jax.grad(loss, argnums=(0, 1))(x, 0.7)
  np.testing.assert_allclose(grad_x, -0.7 * 2 * weights * x, rtol=1e-6)
  assert float(grad_lam) == 0.0


def test_gradient_reversal_in_a_network_reverses_only_upstream():
  w = jnp.asarray([[0.5, -1.0], [2.0, 0.3]])
  x = jnp.asarray([1.0, -2.0])
  head = lambda h: jnp.sum(jnp.tanh(h) ** 2)
  plain = jax.grad(lambda w_: head(x @ w_))(w)
  reversed_ = jax.grad(lambda w_: head(g.gradient_reversal(x @ w_, 0.25)))(w)
  np.testing.assert_allclose(reversed_, -0.25 * plain, rtol=1e-6)


def test_lambda_schedule_does_not_recompile():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def grad_fn(x, lam):
    return jax.grad(lambda a: jnp.sum(g.gradient_reversal(a, lam)))(x)

  for lam in (0.0, 0.3, 1.0):
    np.testing.assert_allclose(grad_fn(jnp.ones(3), lam), -lam * np.ones(3))


def brute_force_accuracy(y_true, y_pred):
  clusters, labels = int(y_pred.max()) + 1, int(y_true.max()) + 1
  best = 0
  for perm in itertools.permutations(range(max(clusters, labels)), clusters):
    best = max(best, np.sum(np.asarray(perm)[y_pred] == y_true))
  return best / len(y_true)


@pytest.mark.parametrize("seed", range(5))
def test_cluster_accuracy_matches_brute_force(seed):
  rng = np.random.default_rng(seed)
  y_true = rng.integers(0, 4, 60)
  y_pred = np.where(rng.random(60) < 0.7, (y_true + 2) % 4, rng.integers(0, 5, 60))
  assert g.cluster_accuracy(y_true, y_pred) == pytest.approx(brute_force_accuracy(y_true, y_pred))


def test_cluster_accuracy_errors():
  with pytest.raises(ValueError, match="same non-empty shape"):
    g.cluster_accuracy(np.array([0, 1]), np.array([0]))
  with pytest.raises(ValueError, match="integer"):
    g.cluster_accuracy(np.array([0.5]), np.array([0]))

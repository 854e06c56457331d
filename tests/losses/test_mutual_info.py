"""IIC, MINE, closed-form and histogram mutual information."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gapmmd_jax as g


def ref_iic(z, z_bar):
  p = z.astype(np.float64).T @ z_bar / len(z)
  p = (p + p.T) / 2
  p /= p.sum()
  pi, pj = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
  mask = p > 0
  return -np.sum(p[mask] * np.log((p / (pi * pj))[mask]))


def test_iic_matches_formula():
  rng = np.random.default_rng(0)
  z = jax.nn.softmax(rng.normal(size=(64, 7)) * 2)
  z_bar = jax.nn.softmax(rng.normal(size=(64, 7)) * 2)
  np.testing.assert_allclose(
    g.iic_loss(z, z_bar), ref_iic(np.asarray(z), np.asarray(z_bar)), rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(
    jax.jit(g.iic_loss)(z, z_bar), g.iic_loss(z, z_bar), rtol=1e-5, atol=1e-6
  )


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(st.integers(2, 12), st.integers(1, 5))
def test_iic_optimum_is_minus_log_c(num_classes, repeats):
  z = jnp.tile(jnp.eye(num_classes), (repeats, 1))
  np.testing.assert_allclose(jax.jit(g.iic_loss)(z, z), -np.log(num_classes), rtol=1e-5)


def test_iic_gradient_finite_with_empty_clusters():
  z = jnp.tile(jnp.asarray([[1.0, 0.0, 0.0]]), (8, 1))
  grads = jax.grad(g.iic_loss)(z, z)
  assert np.all(np.isfinite(grads))


def test_iic_errors():
  with pytest.raises(ValueError, match="same non-empty shape"):
    g.iic_loss(jnp.ones((4, 3)), jnp.ones((4, 2)))
  probabilities = jax.nn.softmax(jax.random.normal(jax.random.key(0), (8, 3)))
  logits = jnp.log(probabilities)
  with pytest.raises(ValueError, match="z_bar must hold probabilities"):
    g.iic_loss(probabilities, logits)  # logits by mistake: before, a plausible loss
  nan = probabilities.at[2, 1].set(jnp.nan)
  with pytest.raises(ValueError, match=r"z holds 1 non-finite entries .* index \(2, 1\)"):
    g.iic_loss(nan, probabilities)
  jitted = jax.jit(g.iic_loss)
  assert np.isnan(jitted(probabilities, logits)) and np.isnan(jitted(nan, probabilities))
  np.testing.assert_allclose(
    jitted(probabilities, probabilities), g.iic_loss(probabilities, probabilities), rtol=1e-5
  )


def test_histogram_mutual_information_rejects_non_finite_samples():
  """Before, a NaN made every cell empty and the estimate 0."""
  a = np.random.default_rng(0).normal(size=100)
  bad = a.copy()
  bad[7] = np.nan
  with pytest.raises(ValueError, match=r"b holds 1 non-finite entries .* index \(7,\)"):
    g.histogram_mutual_information(a, bad)
  assert np.isnan(jax.jit(g.histogram_mutual_information)(bad, a))
  assert float(jax.jit(g.histogram_mutual_information)(a, a)) > 1.0


def test_mine_bound_matches_formula_and_is_stable():
  rng = np.random.default_rng(1)
  tj, tm = rng.normal(size=50), rng.normal(size=60)
  np.testing.assert_allclose(
    g.mine_lower_bound(tj, tm), tj.mean() - np.log(np.mean(np.exp(tm))), rtol=1e-5
  )
  big = g.mine_lower_bound(tj * 1e3, tm * 1e3)
  assert np.isfinite(big)
  np.testing.assert_allclose(big, 1e3 * tj.mean() - (1e3 * tm.max() - np.log(60)), rtol=1e-4)


def test_mine_bias_corrected_value_and_gradient():
  rng = np.random.default_rng(2)
  tj, tm = jnp.asarray(rng.normal(size=16)), jnp.asarray(rng.normal(size=16))
  previous = jnp.log(1.7)
  loss, new_log_ma = g.mine_bias_corrected_loss(tj, tm, previous, decay=0.1)
  np.testing.assert_allclose(loss, -g.mine_lower_bound(tj, tm), rtol=1e-6)
  batch_mean = np.mean(np.exp(np.asarray(tm, np.float64)))
  moving = 0.9 * 1.7 + 0.1 * batch_mean
  np.testing.assert_allclose(np.exp(new_log_ma), moving, rtol=1e-5)
  grad_tm = jax.grad(lambda t: g.mine_bias_corrected_loss(tj, t, previous, decay=0.1)[0])(tm)
  # d/dt_i of mean(exp(t)) / moving_average (Belghazi et al. 2018, Algorithm 1).
  np.testing.assert_allclose(grad_tm, np.exp(np.asarray(tm)) / 16 / moving, rtol=1e-5)
  first_loss, first = g.mine_bias_corrected_loss(tj, tm, -jnp.inf)
  np.testing.assert_allclose(np.exp(first), batch_mean, rtol=1e-5)
  assert np.isfinite(first_loss)


def test_gaussian_mi_published_values():
  np.testing.assert_allclose(
    g.gaussian_mutual_information(jnp.asarray([0.5, 0.8])), [0.1438, 0.5108], atol=1e-4
  )
  assert np.isinf(g.gaussian_mutual_information(-1.0))
  for bad in (1.5, np.nan, [0.5, -2.0]):
    with pytest.raises(ValueError, match=r"rho must lie in \[-1, 1\]"):
      g.gaussian_mutual_information(bad)
  assert np.isnan(jax.jit(g.gaussian_mutual_information)(1.5))


def test_histogram_mi():
  rng = np.random.default_rng(3)
  a, b = rng.normal(size=(2, 500))
  counts = np.histogram2d(a, b, bins=8)[0] / 500
  pi, pj = counts.sum(1, keepdims=True), counts.sum(0, keepdims=True)
  mask = counts > 0
  expected = np.sum(counts[mask] * np.log((counts / (pi * pj))[mask]))
  np.testing.assert_allclose(g.histogram_mutual_information(a, b, bins=8), expected, rtol=1e-4)
  # On many samples it approaches the closed form of a correlated Gaussian.
  cov = [[1, 0.5], [0.5, 1]]
  xy = rng.multivariate_normal([0, 0], cov, size=200_000)
  estimate = float(g.histogram_mutual_information(xy[:, 0], xy[:, 1], bins=40))
  assert abs(estimate - 0.1438) < 0.02

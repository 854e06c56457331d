"""One API for the three tests and one meaning per kernel parameter; the forms of version
0.1 keep working for one release, with a DeprecationWarning, and give the same numbers."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gapmmd_jax as g
from gapmmd_jax.losses import _mmd
from tests.losses.test_two_sample import _agg64


def _samples(seed, n, m, d=3, shift=0.3):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, d)).astype(np.float32)
  return x, (rng.standard_normal((m, d)) + shift).astype(np.float32)


TESTS = {
  "mmd_test": lambda key, x, y, **kw: g.mmd_test(key, x, y, num_draws=99, **kw),
  "mmd_fuse": lambda key, x, y, **kw: g.mmd_fuse(key, x, y, num_draws=99, **kw),
  "mmd_agg": lambda key, x, y, **kw: g.mmd_agg(
    key, x, y, num_draws=99, num_correction_draws=99, **kw
  ),
}


@pytest.mark.parametrize("name", TESTS)
def test_the_three_tests_return_one_type_with_reject_at_alpha(name):
  x, y = _samples(0, 20, 24, shift=0.4)
  for alpha in (0.01, 0.05, 0.5):
    result = TESTS[name](jax.random.key(1), x, y, alpha=alpha)
    assert isinstance(result, g.TwoSampleResult)
    assert result.statistic.shape == result.p_value.shape == result.reject.shape == ()
    assert bool(result.reject) == bool(result.p_value <= alpha)
  jitted = jax.jit(lambda k, a, b: TESTS[name](k, a, b))(jax.random.key(1), x, y)
  jax.tree.map(np.testing.assert_array_equal, jitted, TESTS[name](jax.random.key(1), x, y))
  with pytest.raises(ValueError, match="alpha"):
    TESTS[name](jax.random.key(1), x, y, alpha=0.0)


@pytest.mark.parametrize("method,n,m", [("wild-bootstrap", 14, 14), ("permutation", 12, 15)])
def test_agg_p_value_is_the_smallest_level_that_rejects(method, n, m):
  """Against the float64 MMDAgg of the paper's formulas run at every level k / B2 (and one
  below 1 / B2): the smallest level at which it rejects, on the same draws."""
  b1, b2 = 30, 20
  for seed, shift in ((2, 0.0), (3, 0.5), (4, 0.9)):
    x, y = _samples(seed, n, m, d=2, shift=shift)
    key = jax.random.key(seed)
    draws = np.asarray(
      _mmd.sign_rows(key, n, jnp.arange(b1 + b2))
      if method == "wild-bootstrap"
      else _mmd.permutation_indicators(key, n, m, b1 + b2)
    )
    levels = [0.5 / b2] + [k / b2 for k in range(1, b2)]
    rejecting = [a for a in levels if _agg64(x, y, draws, method, alpha=a, num_draws=b1)[0]]
    expected = 1.0 if not rejecting else (0.0 if rejecting[0] < 1 / b2 else rejecting[0])
    ours = g.mmd_agg(key, x, y, num_draws=b1, num_correction_draws=b2, method=method, draws=draws)
    assert float(ours.p_value) == pytest.approx(expected, abs=1e-6), (seed, rejecting)
    assert float(ours.statistic) == pytest.approx(float(jnp.max(ours.statistics - ours.quantiles)))


def test_mk_mmd2_scales_and_agg_bandwidths_name_different_quantities():
  """``distance_scales`` s and MMDAgg's bandwidths lambda: exp(-|a - b|^2 / s) is MMDAgg's
  Gaussian of lambda = sqrt(s), so the same kernel gives the same unbiased MMD^2 (n != m:
  MMDAgg's permutation statistic is the plain unbiased estimate)."""
  x, y = _samples(5, 30, 40, d=4)
  lambdas = np.array([0.7, 2.5], np.float32)
  agg = g.mmd_agg(
    jax.random.key(0),
    x,
    y,
    kernels=("gaussian",),
    bandwidths=lambdas,
    num_draws=9,
    num_correction_draws=9,
  )
  for lam, statistic in zip(lambdas, agg.statistics):
    single = g.mk_mmd2(x, y, distance_scales=[lam**2], estimator="unbiased")
    np.testing.assert_allclose(single, statistic, rtol=2e-4, atol=1e-6)
  with pytest.raises(TypeError, match="distance_scales"):
    g.mmd_agg(jax.random.key(0), x, y, distance_scales=lambdas)
  with pytest.raises(TypeError, match="both bandwidths= and distance_scales="):
    g.mk_mmd2(x, y, bandwidths=lambdas, distance_scales=lambdas)
  # DSN's bank stores 2 sigma for its exp(-d^2 / (2 sigma)): sigma from 1e-6 to 1e6.
  assert g.DSN_DISTANCE_SCALES[0] == 2e-6 and g.DSN_DISTANCE_SCALES[-1] == 2e6


def _warns(fn):
  with pytest.warns(DeprecationWarning) as record:
    value = fn()
  return value, str(record[0].message)


def test_deprecated_forms_warn_name_the_new_form_and_give_the_same_numbers():
  x, y = _samples(6, 16, 16)
  key = jax.random.key(3)
  for test in (g.mmd_test, g.mmd_fuse):
    new = test(key, x, y, num_draws=50)
    old, message = _warns(lambda: test(key, x, y, num_permutations=50))
    assert "num_draws=" in message
    jax.tree.map(np.testing.assert_array_equal, old, new)
    (statistic, p), message = _warns(lambda: tuple(new))  # the 0.1 return value
    assert "result.p_value" in message
    assert statistic == new.statistic and p == new.p_value
    assert _warns(lambda: new[1])[0] == new.p_value
  for old_name, new_name in (
    ("DSN_BANDWIDTHS", "DSN_DISTANCE_SCALES"),
    ("MMDAggResult", "TwoSampleResult"),
  ):
    value, message = _warns(lambda: getattr(g, old_name))
    assert value is getattr(g, new_name) and new_name in message
  scales = [0.5, 2.0]
  old, message = _warns(lambda: g.mk_mmd2(x, y, bandwidths=scales))
  assert "distance_scales=" in message and old == g.mk_mmd2(x, y, distance_scales=scales)
  old, _ = _warns(lambda: g.mk_mmd_kernel_weights(x, y, bandwidths=scales))
  np.testing.assert_array_equal(old, g.mk_mmd_kernel_weights(x, y, distance_scales=scales))
  logits_fn = lambda a: a @ jnp.arange(12.0).reshape(3, 4) / 10
  for fn in (g.vat_loss, g.virtual_adversarial_perturbation):
    new = fn(key, logits_fn, x, xi=1e-6, eps=0.5)
    old, message = _warns(lambda: fn(logits_fn, x, key, xi=1e-6, eps=0.5))
    assert "key first" in message
    np.testing.assert_array_equal(old, new)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # the new forms do not warn
    assert 0 < float(g.mmd_test(key, x, y, num_draws=5).p_value) <= 1
    g.vat_loss(key, logits_fn, x, xi=1e-6, eps=0.5)


def test_known_arrays_closed_over_inside_jit():
  """A constant that a jitted function closes over is checked as in an eager call (it once
  raised TracerBoolConversionError): mmd2's gradient in a shift of y, and the tests."""
  x, y = _samples(7, 30, 20, d=4)
  grad = jax.jit(jax.grad(lambda s: g.mmd2(x, y - s, estimator="unbiased")))(jnp.zeros(4))
  eager = jax.grad(lambda s: g.mmd2(jnp.asarray(x), jnp.asarray(y) - s, estimator="unbiased"))
  np.testing.assert_allclose(grad, eager(jnp.zeros(4)), rtol=1e-5, atol=1e-7)
  for name, test in TESTS.items():
    inside = jax.jit(lambda k: test(k, x, y))(jax.random.key(2))
    assert float(inside.p_value) == float(test(jax.random.key(2), x, y).p_value), name
  bad = jnp.asarray(x).at[3, 1].set(jnp.nan)
  with pytest.raises(ValueError, match="non-finite"):
    jax.jit(lambda s: g.mmd2(bad, y + s))(0.0)

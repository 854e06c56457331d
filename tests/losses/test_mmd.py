"""MMD estimators, MK-MMD, kernel weights, permutation test, class matrix."""

import itertools

import chex
import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import gapmmd_jax as g
from gapmmd_jax.losses import _kernels, _mmd

# ---------- float64 NumPy references, written from the formulas ----------


def ref_kernel(a, b, bandwidths, weights):
  sq = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
  return sum(w * np.exp(-sq / bw) for bw, w in zip(bandwidths, weights))


def ref_bandwidths(x, y, kernel_mul=2.0, kernel_num=5, fix_sigma=None):
  z = np.concatenate([x, y]).astype(np.float64)
  n = len(z)
  l2 = ((z[None, :, :] - z[:, None, :]) ** 2).sum(2)
  scale = fix_sigma if fix_sigma else l2.sum() / (n * n - n)
  base = scale / kernel_mul ** (kernel_num // 2)
  return [base * kernel_mul**i for i in range(kernel_num)]


def ref_mmd_rbf(x, y, kernel_mul=2.0, kernel_num=5, fix_sigma=None):
  """The widely copied PyTorch mmd_rbf, step by step (n == m)."""
  z = np.concatenate([x, y]).astype(np.float64)
  n = len(x)
  l2 = ((z[None, :, :] - z[:, None, :]) ** 2).sum(2)
  bandwidth = fix_sigma if fix_sigma else l2.sum() / (len(z) ** 2 - len(z))
  bandwidth /= kernel_mul ** (kernel_num // 2)
  k = sum(np.exp(-l2 / (bandwidth * kernel_mul**i)) for i in range(kernel_num))
  xx, yy, xy, yx = k[:n, :n], k[n:, n:], k[:n, n:], k[n:, :n]
  return np.mean(xx + yy - xy - yx)


def ref_estimate(x, y, bandwidths, weights, estimator):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  n, m = len(x), len(y)
  kxx, kyy, kxy = (ref_kernel(a, b, bandwidths, weights) for a, b in ((x, x), (y, y), (x, y)))
  if estimator == "biased":
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()
  if estimator == "unbiased":
    off = lambda k: k.sum() - np.trace(k)
    return off(kxx) / (n * (n - 1)) + off(kyy) / (m * (m - 1)) - 2 * kxy.mean()
  k = lambda a, b: ref_kernel(a[None], b[None], bandwidths, weights)[0, 0]
  terms = [
    k(x[2 * i], x[2 * i + 1])
    + k(y[2 * i], y[2 * i + 1])
    - k(x[2 * i], y[2 * i + 1])
    - k(x[2 * i + 1], y[2 * i])
    for i in range(n // 2)
  ]
  return np.mean(terms)


def samples(seed, n=40, m=40, d=5, shift=0.5):
  rng = np.random.default_rng(seed)
  return (
    rng.normal(size=(n, d)).astype(np.float32),
    (rng.normal(size=(m, d)) + shift).astype(np.float32),
  )


# ---------- values ----------


@pytest.mark.parametrize(
  "kernel_mul,kernel_num,fix_sigma", [(2.0, 5, None), (3.0, 3, None), (2.0, 4, 7.5), (1.5, 1, None)]
)
def test_biased_matches_reference_mmd_rbf(kernel_mul, kernel_num, fix_sigma):
  x, y = samples(0)
  expected = ref_mmd_rbf(x, y, kernel_mul, kernel_num, fix_sigma)
  kwargs = dict(kernel_mul=kernel_mul, kernel_num=kernel_num, fix_sigma=fix_sigma)
  np.testing.assert_allclose(g.mmd2(x, y, **kwargs), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    jax.jit(lambda a, b: g.mmd2(a, b, **kwargs))(x, y), expected, rtol=1e-5, atol=1e-6
  )


@pytest.mark.parametrize("estimator", ["biased", "unbiased", "linear"])
@pytest.mark.parametrize("sizes", [(40, 40), (33, 51), (7, 2)])
def test_estimators_match_formula(estimator, sizes):
  n, m = sizes
  if estimator == "linear":
    m = n
  x, y = samples(1, n, m)
  bandwidths = ref_bandwidths(x, y)
  expected = ref_estimate(x, y, bandwidths, [1.0] * 5, estimator)
  np.testing.assert_allclose(g.mmd2(x, y, estimator=estimator), expected, rtol=1e-5, atol=1e-6)


def test_median_bandwidth():
  x, y = samples(2, 30, 20)
  z = np.concatenate([x, y]).astype(np.float64)
  sq = ((z[:, None] - z[None]) ** 2).sum(-1)
  median = np.median(sq[np.triu_indices(len(z), 1)])
  expected = ref_estimate(x, y, ref_bandwidths(x, y, fix_sigma=median), [1.0] * 5, "biased")
  np.testing.assert_allclose(g.mmd2(x, y, bandwidth="median"), expected, rtol=1e-5)


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_row_blocks_equal_full_matrix(estimator):
  x, y = samples(3, 100, 70)
  full = g.mmd2(x, y, estimator=estimator, block_size=10_000)
  for block in (1, 16, 33):
    np.testing.assert_allclose(
      g.mmd2(x, y, estimator=estimator, block_size=block), full, rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_paired_tiles_match_float64(estimator):
  # n == m: symmetric tiles of stacked [x_I; y_I] rows, padded where the tile
  # side does not divide n (300 = 256 + 44 in the automatic choice).
  x, y = samples(9, 300, 300, d=5, shift=0.3)
  expected = ref_estimate(x, y, ref_bandwidths(x, y), [1.0] * 5, estimator)
  for block in (None, 1, 7, 150, 300):
    np.testing.assert_allclose(
      g.mmd2(x, y, estimator=estimator, block_size=block),
      expected,
      rtol=1e-5,
      err_msg=f"block_size={block}",
    )


def test_large_input_uses_blocks_and_stays_accurate():
  x, y = samples(4, 2500, 2000, d=3, shift=0.2)  # 2500 * 2500 > 4M entries: row blocks
  x_far, y_far = x + 1000.0, y + 1000.0  # translation must not cost accuracy
  # The blocked walk against the dense float64 formula at the full size.
  expected = ref_estimate(x, y, ref_bandwidths(x, y), [1.0] * 5, "biased")
  np.testing.assert_allclose(g.mmd2(x, y), expected, rtol=1e-4)
  expected = ref_estimate(x[:300], y[:300], ref_bandwidths(x[:300], y[:300]), [1.0] * 5, "biased")
  np.testing.assert_allclose(g.mmd2(x[:300], y[:300]), expected, rtol=1e-5)
  np.testing.assert_allclose(g.mmd2(x_far, y_far), g.mmd2(x, y), rtol=2e-4)


def test_mk_mmd2_matches_formula():
  x, y = samples(5, 30, 25)
  bandwidths, weights = [0.5, 2.0, 8.0], [0.2, 0.0, 0.8]
  for estimator in ("biased", "unbiased"):
    np.testing.assert_allclose(
      g.mk_mmd2(x, y, distance_scales=bandwidths, weights=weights, estimator=estimator),
      ref_estimate(x, y, bandwidths, weights, estimator),
      rtol=1e-5,
    )


# ---------- properties ----------

finite_samples = hnp.arrays(
  np.float32,
  hnp.array_shapes(min_dims=2, max_dims=2, min_side=2, max_side=12),
  elements=hypothesis.strategies.floats(-10, 10, width=32),
)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(finite_samples, hypothesis.strategies.integers(0, 2**31 - 1))
def test_symmetric_permutation_invariant_and_zero_on_itself(x, seed):
  mmd2 = jax.jit(g.mmd2)  # one compilation per drawn shape, not one per operation
  rng = np.random.default_rng(seed)
  y = (x + rng.normal(size=x.shape)).astype(np.float32)
  value = float(mmd2(x, y))
  assert np.isfinite(value)
  np.testing.assert_allclose(mmd2(y, x), value, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(
    mmd2(x[rng.permutation(len(x))], y[rng.permutation(len(y))]), value, rtol=1e-4, atol=1e-5
  )
  np.testing.assert_allclose(mmd2(x, x), 0.0, atol=1e-5)


def test_eager_calls_compile_once_per_shape_and_options():
  """Outside jit, a call checks its arguments and runs one compiled program: a second call
  with new values and the same shapes and options compiles nothing; new options do."""
  rng = np.random.default_rng(3)
  x, y = rng.normal(size=(2, 33, 4)).astype(np.float32)
  before = _mmd._mmd2._cache_size()
  first = g.mmd2(x, y, fix_sigma=3.0)
  assert _mmd._mmd2._cache_size() == before + 1
  again = g.mmd2(x + 1.0, y, fix_sigma=5.0)  # new data and scale: traced, no recompilation
  assert _mmd._mmd2._cache_size() == before + 1
  assert float(first) != float(again)
  g.mmd2(x, y, fix_sigma=3.0, estimator="unbiased")
  assert _mmd._mmd2._cache_size() == before + 2
  # Values are still checked eagerly; kernel_mul sets the kernel at trace time.
  with pytest.raises(ValueError, match="fix_sigma must be > 0"):
    g.mmd2(x, y, fix_sigma=-1.0)
  with pytest.raises(TypeError, match="kernel_mul must be a number known at trace time"):
    jax.jit(lambda mul: g.mmd2(x, y, kernel_mul=mul))(2.0)
  np.testing.assert_allclose(g.mmd2(x, y, kernel_mul=np.float32(3.0)), g.mmd2(x, y, kernel_mul=3))


def test_identical_points_give_zero_not_nan():
  x = np.ones((8, 3), np.float32)
  for estimator in ("biased", "unbiased", "linear"):
    value = g.mmd2(x, x, estimator=estimator)
    assert np.isfinite(value) and abs(float(value)) < 1e-6
  grads = jax.grad(lambda a: g.mmd2(a, x))(x)
  assert np.all(np.isfinite(grads))


def test_unbiased_averages_to_zero_under_null():
  keys = jax.random.split(jax.random.key(0), 400)
  draw = lambda k: jax.random.normal(k, (2, 20, 3))
  values = jax.vmap(lambda k: g.mmd2(*draw(k), estimator="unbiased"))(keys)
  biased = jax.vmap(lambda k: g.mmd2(*draw(k)))(keys)
  assert abs(float(values.mean())) < 3 * float(values.std()) / np.sqrt(len(values))
  assert float(biased.mean()) > 10 * abs(float(values.mean()))  # the V-statistic's bias


def test_vmap_matches_loop():
  x = jax.random.normal(jax.random.key(1), (4, 20, 3))
  y = jax.random.normal(jax.random.key(2), (4, 25, 3)) + 0.3
  batched = jax.vmap(lambda a, b: g.mmd2(a, b, estimator="unbiased"))(x, y)
  np.testing.assert_allclose(
    batched, [g.mmd2(a, b, estimator="unbiased") for a, b in zip(x, y)], rtol=1e-5, atol=1e-6
  )


def test_gradients_finite_and_correct():
  x, y = samples(6, 12, 10, d=3)
  with jax.enable_x64(True):
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    for estimator in ("biased", "unbiased"):
      jax.test_util.check_grads(
        lambda a, b: g.mmd2(a, b, estimator=estimator, block_size=5),
        (x64, y64),
        order=1,
        modes=("rev",),
        atol=1e-5,
        rtol=1e-4,
      )


def test_low_precision_accumulates_in_float32():
  x, y = samples(7)
  for dtype in (jnp.float16, jnp.bfloat16):
    value = g.mmd2(x.astype(dtype), y.astype(dtype))
    assert value.dtype == jnp.float32
    np.testing.assert_allclose(value, g.mmd2(x, y), rtol=0.05)


def test_compiles_once():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def f(a, b):
    return g.mmd2(a, b, estimator="unbiased")

  for seed in range(3):
    f(*samples(seed))


# ---------- bad input ----------


@pytest.mark.parametrize(
  "x,y,kwargs,message",
  [
    (np.ones(5), np.ones((5, 2)), {}, r"x must have shape \[n, d\]"),
    (np.ones((5, 2)), np.ones((5, 3)), {}, "same feature dimension"),
    (np.ones((1, 2)), np.ones((5, 2)), {"estimator": "unbiased"}, "at least 2 rows"),
    (np.ones((5, 2)), np.ones((6, 2)), {"estimator": "linear"}, "n == m"),
    (np.ones((5, 2)), np.ones((5, 2)), {"estimator": "quadratic"}, "estimator must be one of"),
    (np.ones((0, 2)), np.ones((5, 2)), {}, "at least 1 rows"),
    (np.ones((5, 2)), np.ones((5, 2)), {"fix_sigma": -1.0}, "fix_sigma must be > 0"),
    (np.ones((5, 2)), np.ones((5, 2)), {"kernel_num": 0}, "kernel_num must be an integer"),
  ],
)
def test_bad_input_raises_clear_errors(x, y, kwargs, message):
  with pytest.raises(ValueError, match=message):
    g.mmd2(x, y, **kwargs)


def test_mk_mmd2_rejects_negative_weights_and_bad_shapes():
  x, y = samples(8)
  with pytest.raises(ValueError, match="non-negative"):
    g.mk_mmd2(x, y, distance_scales=[1.0, 2.0], weights=[0.5, -0.1])
  with pytest.raises(ValueError, match="shape of distance_scales"):
    g.mk_mmd2(x, y, distance_scales=[1.0, 2.0], weights=[1.0])
  with pytest.raises(TypeError, match="dtype"):
    g.mmd2(np.array([["a"]]), np.array([["b"]]))


SAMPLE_FUNCTIONS = {
  "mmd2": lambda x, y: g.mmd2(x, y),
  "mmd2 linear": lambda x, y: g.mmd2(x, y, estimator="linear"),
  "mk_mmd2": lambda x, y: g.mk_mmd2(x, y, distance_scales=[1.0, 4.0]),
  "mmd_test": lambda x, y: g.mmd_test(jax.random.key(0), x, y, num_draws=20),
  "mmd_fuse": lambda x, y: g.mmd_fuse(jax.random.key(0), x, y, num_draws=20),
  "mmd_agg": lambda x, y: g.mmd_agg(
    jax.random.key(0), x, y, num_bandwidths=2, num_draws=20, num_correction_draws=20
  ),
  "cosine_distance": g.cosine_distance,
  "mahalanobis_distance": g.mahalanobis_distance,
}


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
@pytest.mark.parametrize("name", list(SAMPLE_FUNCTIONS))
def test_non_finite_samples_raise_eagerly_and_give_nan_under_jit(name, bad_value):
  """Before, NaN or inf in the data came out as a plausible number: a permutation p-value
  of 1 / (B + 1), MMDAgg rejecting, MMD-FUSE's p-value 1, a cosine distance of 1, a finite
  linear-time MMD^2 (inf)."""
  fn = SAMPLE_FUNCTIONS[name]
  x, y = samples(3, 12, 12, d=2)
  x[4, 1] = bad_value
  with pytest.raises(ValueError, match=r"x holds 1 non-finite entries .* index \(4, 1\)"):
    fn(x, y)
  with pytest.raises(ValueError, match=r"y holds 1 non-finite"):
    fn(y, x)
  for leaf in jax.tree.leaves(jax.jit(fn)(x, y)):
    if leaf.dtype == jnp.bool_:
      assert not bool(leaf), name  # e.g. MMDAgg's reject
    else:
      assert np.all(np.isnan(leaf)), (name, leaf)
  x[4, 1] = 0.0
  for leaf in jax.tree.leaves(jax.jit(fn)(x, y)):  # finite data: no NaN
    assert leaf.dtype == jnp.bool_ or np.all(np.isfinite(leaf)), (name, leaf)


# ---------- learned kernel weights ----------


def test_kernel_weights_solve_the_power_qp():
  x, y = samples(9, 400, 400, d=2, shift=0.4)
  bandwidths = [0.05, 0.5, 2.0, 8.0, 64.0]
  beta = np.asarray(g.mk_mmd_kernel_weights(x, y, distance_scales=bandwidths))
  assert beta.shape == (5,) and np.all(beta >= 0) and np.isclose(beta.sum(), 1.0)
  # The objective delta^T b / sqrt(b^T Q b) must not be beaten by any single kernel.
  h = np.stack(
    [
      [
        ref_estimate(x[2 * i : 2 * i + 2], y[2 * i : 2 * i + 2], [bw], [1.0], "linear")
        for bw in bandwidths
      ]
      for i in range(200)
    ]
  )
  delta, q = h.mean(0), np.cov(h, rowvar=False)
  power = lambda b: (delta @ b) / np.sqrt(b @ q @ b)
  assert all(power(beta) >= power(e) * 0.98 for e in np.eye(5) if delta @ e > 0)


def _power_qp_by_active_sets(delta, q):
  """min b^T q b s.t. delta^T b = 1, b >= 0, by trying every support: on a support S the
  equality-constrained optimum is q_SS^-1 delta_S / (delta_S^T q_SS^-1 delta_S); the answer
  is the feasible one of least objective (exact for the few kernels of a test)."""
  best, value = None, np.inf
  for size in range(1, len(delta) + 1):
    for support in itertools.combinations(range(len(delta)), size):
      s = list(support)
      direction = np.linalg.solve(q[np.ix_(s, s)], delta[s])
      if delta[s] @ direction <= 0:
        continue
      b = np.zeros(len(delta))
      b[s] = direction / (delta[s] @ direction)
      if np.all(b >= -1e-12) and b @ q @ b < value:
        best, value = b, b @ q @ b
  return best


def test_kernel_weights_equal_an_independent_qp_solution():
  """The weights against the QP solved by enumerating active sets, on the same statistics
  (delta, Q and the regularisation recomputed here in float64 from the formulas)."""
  x, y = samples(9, 400, 400, d=2, shift=0.4)  # one kernel with delta < 0: weight 0
  scales = [0.1, 0.5, 2.0, 8.0, 32.0]
  h = np.stack(
    [
      [
        ref_estimate(x[2 * i : 2 * i + 2], y[2 * i : 2 * i + 2], [s], [1.0], "linear")
        for s in scales
      ]
      for i in range(200)
    ]
  )
  delta, q = h.mean(0), np.cov(h, rowvar=False)
  q += 1e-3 * np.trace(q) / len(scales) * np.eye(len(scales))
  expected = _power_qp_by_active_sets(delta, q)
  ours = np.asarray(g.mk_mmd_kernel_weights(x, y, distance_scales=scales), np.float64)
  np.testing.assert_allclose(ours, expected / expected.sum(), atol=2e-3)


def test_kernel_weights_warn_when_the_solver_fails(monkeypatch):
  x, y = samples(9, 60, 60, d=2, shift=0.5)
  failed = scipy.optimize.OptimizeResult(x=np.zeros(3), success=False, message="no")
  monkeypatch.setattr(scipy.optimize, "minimize", lambda *a, **k: failed)
  with pytest.warns(RuntimeWarning, match="SLSQP"):
    beta = g.mk_mmd_kernel_weights(x, y, distance_scales=[0.5, 2.0, 8.0])
  assert np.isclose(float(beta.sum()), 1.0) and np.all(np.asarray(beta) >= 0)


def test_kernel_weights_uniform_without_signal():
  x = np.zeros((10, 2), np.float32)
  np.testing.assert_allclose(g.mk_mmd_kernel_weights(x, x, distance_scales=[1.0, 2.0]), [0.5, 0.5])


# ---------- permutation test ----------


@pytest.mark.parametrize("estimator", ["biased", "unbiased", "linear"])
def test_permutation_test_statistic_and_p_value(estimator):
  x, y = samples(10, 30, 30, d=2, shift=0.0)
  result = g.mmd_test(jax.random.key(0), x, y, num_draws=300, estimator=estimator, chunk_size=64)
  stat, p = result.statistic, result.p_value
  np.testing.assert_allclose(stat, g.mmd2(x, y, estimator=estimator), rtol=1e-4, atol=1e-6)
  # Reference p-value from explicit permutations of the pooled sample.
  z = np.concatenate([x, y])
  rng = np.random.default_rng(0)
  null = []
  for _ in range(300):
    perm = rng.permutation(60)
    null.append(float(g.mmd2(z[perm[:30]], z[perm[30:]], estimator=estimator)))
  p_ref = (1 + np.sum(np.asarray(null) >= float(stat))) / 301
  assert abs(float(p) - p_ref) < 0.12
  assert 1 / 301 <= float(p) <= 1.0


@pytest.mark.parametrize(
  "seed,options", [(1, {}), (2, {"estimator": "unbiased", "method": "wild-bootstrap"})]
)
def test_permutation_test_calibrated_and_powerful(seed, options):
  """1000 null data sets at level 0.05 per method, rejection rate in [0.03, 0.07] (about
  -2.9 / +2.9 binomial standard deviations; fixed seeds), and a mean shift."""

  def rejection_rate(shift, num_draws):
    keys = jax.random.split(jax.random.key(seed), num_draws)

    def one(k):
      kx, ky, kp = jax.random.split(k, 3)
      x = jax.random.normal(kx, (25, 2))
      y = jax.random.normal(ky, (25, 2)) + shift
      return g.mmd_test(kp, x, y, num_draws=199, **options).p_value

    p_values = jax.jit(jax.vmap(one))(keys)
    return float(jnp.mean(p_values <= 0.05))

  assert 0.03 <= rejection_rate(0.0, 1000) <= 0.07
  assert rejection_rate(1.0, 300) >= 0.9


def _dense_kernel64(z, fix_sigma, kernel_num=5, kernel_mul=2.0):
  """float64 pooled kernel matrix of the reference kernel with a fixed scale."""
  z = np.asarray(z, np.float64)
  sq = np.sum((z[:, None] - z[None]) ** 2, axis=-1)
  base = fix_sigma / kernel_mul ** (kernel_num // 2)
  return sum(np.exp(-sq / (base * kernel_mul**i)) for i in range(kernel_num))


def _split_statistic64(kmat, in_x, estimator):
  """float64 MMD^2 of one split of the pooled kernel matrix (``in_x``: bool ``[N]``)."""
  kxx, kyy, kxy = kmat[in_x][:, in_x], kmat[~in_x][:, ~in_x], kmat[in_x][:, ~in_x]
  n, m = len(kxx), len(kyy)
  if estimator == "biased":
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()
  return (
    (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    - 2 * kxy.mean()
  )


@pytest.mark.parametrize(
  "estimator,n,m,chunk_size,block_size",
  [
    ("biased", 23, 31, None, None),
    ("unbiased", 23, 31, 7, 16),
    ("biased", 40, 40, 50, 9),
    ("unbiased", 2, 3, None, 2),
  ],
)
def test_permutation_null_matches_float64_reference(estimator, n, m, chunk_size, block_size):
  """Every draw's statistic (same draws) against the dense float64 formula, and the p-value."""
  x, y = samples(12, n, m, d=3, shift=0.4)
  key, draws = jax.random.key(7), 60
  result = g.mmd_test(
    key,
    x,
    y,
    num_draws=draws,
    estimator=estimator,
    fix_sigma=4.0,
    chunk_size=chunk_size,
    block_size=block_size,
  )
  stat, p = result.statistic, result.p_value
  kmat = _dense_kernel64(np.concatenate([x, y]), 4.0)
  observed = _split_statistic64(kmat, np.arange(n + m) < n, estimator)
  np.testing.assert_allclose(stat, observed, rtol=1e-4, atol=1e-6)
  in_x = np.asarray(_mmd.permutation_indicators(key, n, m, draws))
  assert (in_x.sum(axis=1) == n).all()
  null = np.asarray([_split_statistic64(kmat, row, estimator) for row in in_x])
  margin = 1e-5 * np.abs(null).max()  # draws this close to the observed one may round either way
  low, high = np.sum(null >= observed + margin), np.sum(null >= observed - margin)
  assert (1 + low) / (1 + draws) - 1e-6 <= float(p) <= (1 + high) / (1 + draws) + 1e-6


@pytest.mark.parametrize(
  "test",
  [
    lambda k, a, b: g.mmd_test(k, a, b, num_draws=50, chunk_size=20),
    lambda k, a, b: g.mmd_test(k, a, b, num_draws=50, chunk_size=20, method="wild-bootstrap"),
    lambda k, a, b: g.mmd_fuse(k, a, b, num_draws=50, chunk_size=20),
    lambda k, a, b: (
      g.mmd_agg(k, a, b, num_draws=30, num_correction_draws=20, chunk_size=20).p_values
    ),
  ],
  ids=["permutation", "wild-bootstrap", "fuse", "agg"],
)
def test_draws_made_in_groups_are_the_draws_made_at_once(monkeypatch, test):
  """Within a chunk the draws are made a few rows at a time (groups of equal size, the last
  padded); the rows are those made all at once, so the results are bit for bit the same."""
  x, y = samples(14, 30, 30, d=3, shift=0.2)
  # a new function each time, so that the second call traces again
  run = lambda: jax.block_until_ready(jax.jit(lambda *a: test(*a))(jax.random.key(5), x, y))
  at_once = run()
  monkeypatch.setattr(_mmd, "_DRAW_GROUP_ENTRIES", 3 * 60)  # 3 rows of 60 (6 of 30: wild)
  in_groups = run()
  for grouped, whole in zip(jax.tree.leaves(in_groups), jax.tree.leaves(at_once)):
    np.testing.assert_array_equal(grouped, whole)


@pytest.mark.parametrize("estimator,chunk_size", [("biased", None), ("unbiased", 17)])
def test_wild_bootstrap_matches_float64_reference(estimator, chunk_size):
  n, draws, key = 30, 80, jax.random.key(3)
  x, y = samples(13, n, n, d=4, shift=0.3)
  result = g.mmd_test(
    key,
    x,
    y,
    num_draws=draws,
    estimator=estimator,
    fix_sigma=3.0,
    method="wild-bootstrap",
    block_size=16,
    chunk_size=chunk_size,
  )
  stat, p = result.statistic, result.p_value
  kmat = _dense_kernel64(np.concatenate([x, y]), 3.0)
  h = kmat[:n, :n] + kmat[n:, n:] - kmat[:n, n:] - kmat[n:, :n]
  if estimator == "unbiased":
    np.fill_diagonal(h, 0.0)
  scale = n * n if estimator == "biased" else n * (n - 1)
  signs = np.asarray(_mmd.sign_rows(key, n, jnp.arange(draws)), np.float64)
  observed = h.sum() / scale
  null = np.einsum("bi,ij,bj->b", signs, h, signs) / scale
  np.testing.assert_allclose(stat, observed, rtol=1e-4, atol=1e-6)
  if estimator == "biased":
    np.testing.assert_allclose(stat, g.mmd2(x, y, fix_sigma=3.0), rtol=1e-4)
  margin = 1e-5 * np.abs(null).max()
  low, high = np.sum(null >= observed + margin), np.sum(null >= observed - margin)
  assert (1 + low) / (1 + draws) - 1e-6 <= float(p) <= (1 + high) / (1 + draws) + 1e-6


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(
  num=st.integers(1, 40),
  draws=st.integers(1, 5),
  block=st.integers(1, 48),
  seed=st.integers(0, 2**16),
)
def test_kernel_quadratic_forms_match_dense(num, draws, block, seed):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(num, 3)).astype(np.float32)
  c = rng.normal(size=(draws, num)).astype(np.float32)
  kernel = _kernels.Kernel(jnp.asarray([0.5, 0.1]), jnp.asarray([1.0, 2.0]))
  forms = _kernels.kernel_quadratic_forms(jnp.asarray(z), jnp.asarray(c), kernel, block_size=block)
  sq = np.sum((z[:, None].astype(np.float64) - z[None]) ** 2, axis=-1)
  shifted = np.expm1(-0.5 * sq) + 2.0 * np.expm1(-0.1 * sq)  # k - peak: 0 on the diagonal
  expected = np.einsum("bi,ij,bj->b", c.astype(np.float64), shifted, c)
  np.testing.assert_allclose(forms, expected, rtol=1e-4, atol=1e-4 * np.abs(shifted).sum() / num)


def test_select_smallest_is_a_stable_argsort_selection():
  keys = np.asarray([[5, 1, 3, 3, 3, 0], [2, 2, 2, 2, 2, 2], [9, 8, 7, 6, 5, 4]], np.uint32)
  for n in range(1, 7):
    chosen = np.asarray(_mmd.select_smallest(jnp.asarray(keys), n))
    expected = np.zeros_like(chosen)
    for row, order in enumerate(np.argsort(keys, axis=1, kind="stable")):
      expected[row, order[:n]] = True
    np.testing.assert_array_equal(chosen, expected)


def test_permutation_test_takes_legacy_keys_and_vmaps():
  x, y = samples(14, 20, 25)
  legacy = jax.random.PRNGKey(5)
  typed = g.mmd_test(jax.random.wrap_key_data(legacy), x, y, num_draws=40)
  jax.tree.map(np.testing.assert_array_equal, g.mmd_test(legacy, x, y, num_draws=40), typed)
  keys = jax.random.split(jax.random.PRNGKey(1), 3)  # legacy: uint32 [3, 2]
  p = jax.vmap(lambda k: g.mmd_test(k, x, y, num_draws=40).p_value)(keys)
  assert p.shape == (3,) and ((p > 0) & (p <= 1)).all()
  with pytest.raises(TypeError, match="PRNGKey"):
    g.mmd_test(jnp.zeros(3), x, y)


def test_test_memory_stays_tiled():
  """At N = 16384 pooled points an [N, N] float32 matrix is 1 GiB; the test's compiled
  program asks for a small fraction of it."""
  n, d, draws = 8192, 8, 64
  x = jax.ShapeDtypeStruct((n, d), jnp.float32)
  compiled = (
    jax.jit(lambda k, a, b: g.mmd_test(k, a, b, num_draws=draws))
    .lower(jax.random.key(0), x, x)
    .compile()
  )
  analysis = compiled.memory_analysis()
  if analysis is None:
    pytest.skip("this backend reports no memory analysis")
  assert analysis.temp_size_in_bytes < (2 * n) ** 2 * 4 / 16


def test_a_chunk_of_draws_costs_about_twice_its_coefficients():
  """The draws are made a few rows at a time, so a chunk's temporaries are its ``[chunk, N]``
  rows and their ``[N, chunk]`` tile layout, not five such arrays (random bits, their sort,
  the threefry state, the tie count) as when a chunk was made at once."""
  n, chunk = 50000, 400
  x = jax.ShapeDtypeStruct((n, 10), jnp.float32)
  compiled = (
    jax.jit(lambda k, a, b: g.mmd_test(k, a, b, num_draws=2000, chunk_size=chunk))
    .lower(jax.random.key(0), x, x)
    .compile()
  )
  analysis = compiled.memory_analysis()
  if analysis is None:
    pytest.skip("this backend reports no memory analysis")
  assert analysis.temp_size_in_bytes < 3 * chunk * (2 * n) * 4


def test_wild_bootstrap_needs_equal_sizes():
  x, y = samples(15, 10, 12)
  with pytest.raises(ValueError, match="n == m"):
    g.mmd_test(jax.random.key(0), x, y, method="wild-bootstrap")
  with pytest.raises(ValueError, match="method must be one of"):
    g.mmd_test(jax.random.key(0), x, y, method="bootstrap")


def test_permutation_test_p_value_never_zero():
  x, y = samples(11, 20, 20, shift=10.0)
  result = g.mmd_test(jax.random.key(0), x, y, num_draws=50)
  _, p = result.statistic, result.p_value
  np.testing.assert_allclose(p, 1 / 51)


# ---------- class matrix ----------


def test_class_mmd_matrix_uses_disjoint_halves():
  rng = np.random.default_rng(12)
  labels = np.repeat(np.arange(3), [10, 12, 9])
  rng.shuffle(labels)
  features = rng.normal(size=(31, 4)).astype(np.float32) + labels[:, None] * 2.0
  matrix = np.asarray(g.class_mmd_matrix(features, labels, num_classes=3))
  half = 4  # smallest class has 9 samples
  for i, j in itertools.product(range(3), repeat=2):
    a = features[np.flatnonzero(labels == i)[:half]]
    b = features[np.flatnonzero(labels == j)[half : 2 * half]]
    np.testing.assert_allclose(matrix[i, j], ref_mmd_rbf(a, b), rtol=1e-4, atol=1e-6)
  assert np.all(np.diag(matrix)[:, None] < matrix + np.eye(3) * 1e9)


def test_class_halves_and_pair_matrix_from_their_definitions():
  """Each class's samples in order, cut into two halves of the common size (half the
  smallest class, or samples_per_class // 2), and the matrix of a set distance between
  first and second halves, against loops over the definitions."""
  rng = np.random.default_rng(5)
  labels = rng.permutation(np.repeat(np.arange(3), [9, 7, 12]))
  features = rng.normal(size=(28, 4)).astype(np.float32)
  distance = lambda a, b: jnp.sum(jnp.abs(a.mean(0) - b.mean(0)))
  for per_class, half in ((None, 3), (4, 2)):
    first, second = g.losses.class_halves(
      features, labels, num_classes=3, samples_per_class=per_class
    )
    matrix = g.class_pair_matrix(
      distance, features, labels, num_classes=3, samples_per_class=per_class
    )
    assert first.shape == second.shape == (3, half, 4)
    for c in range(3):
      members = features[labels == c]
      np.testing.assert_array_equal(first[c], members[:half])
      np.testing.assert_array_equal(second[c], members[half : 2 * half])
    for i, j in itertools.product(range(3), range(3)):
      a, b = features[labels == i][:half], features[labels == j][half : 2 * half]
      expected = np.abs(a.astype(np.float64).mean(0) - b.mean(0)).sum()
      np.testing.assert_allclose(matrix[i, j], expected, rtol=1e-5)


def test_class_mmd_matrix_errors():
  features = np.zeros((6, 2), np.float32)
  with pytest.raises(ValueError, match="at least 2 samples"):
    g.class_mmd_matrix(features, np.array([0, 0, 0, 0, 0, 1]), num_classes=2)
  with pytest.raises(ValueError, match="at least 2 rows"):  # halves of one: no U-statistic
    g.class_mmd_matrix(features, np.array([0, 0, 0, 1, 1, 1]), num_classes=2, estimator="unbiased")
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
    g.class_mmd_matrix(features, np.array([0, 0, 0, 1, 1, 5]), num_classes=2)


def test_one_versus_one_comparison_is_constant():
  """With one sample per set the mean bandwidth is the pair's own distance: no information."""
  rng = np.random.default_rng(13)
  features = rng.normal(size=(40, 3)).astype(np.float32) + np.repeat(np.arange(4), 10)[:, None]
  matrix = np.asarray(
    g.class_mmd_matrix(features, np.repeat(np.arange(4), 10), num_classes=4, samples_per_class=2)
  )
  np.testing.assert_allclose(matrix, matrix[0, 0], rtol=1e-5)


def test_class_gap_loss_matches_class_matrix():
  rng = np.random.default_rng(14)
  labels = rng.integers(0, 4, 64)
  features = (rng.normal(size=(64, 5)) + labels[:, None]).astype(np.float32)
  z = features.astype(np.float64)
  bandwidths = ref_bandwidths(z, z[:0])
  first, second = z[:32], z[32:]
  gaps = np.full((4, 4), np.nan)
  for i, j in itertools.product(range(4), repeat=2):
    a, b = first[labels[:32] == i], second[labels[32:] == j]
    if len(a) and len(b):
      gaps[i, j] = ref_estimate(a, b, bandwidths, [1.0] * 5, "biased")
  off = ~np.eye(4, dtype=bool)
  expected = np.nanmean(np.diag(gaps)) - np.nanmean(gaps[off])
  loss = jax.jit(lambda f, c: g.class_gap_loss(f, c, num_classes=4))(features, labels)
  np.testing.assert_allclose(loss, expected, rtol=1e-4, atol=1e-6)
  assert float(loss) < 0  # separated classes: between-class gaps dominate
  assert np.all(
    np.isfinite(jax.grad(lambda f: g.class_gap_loss(f, labels, num_classes=4))(features))
  )


def test_diagonal_separability():
  distances = np.array([[0.1, 1.0, 2.0], [1.0, 0.2, 0.1], [2.0, 1.0, 0.3]])
  scores = g.diagonal_separability(distances)
  assert scores["rows_diagonal_best"] == pytest.approx(2 / 3)
  assert scores["offdiag_to_diag"] == pytest.approx(np.mean([1, 2, 1, 0.1, 2, 1]) / 0.2)
  similarity = g.diagonal_separability(-distances, higher_is_closer=True)
  assert similarity["rows_diagonal_best"] == pytest.approx(2 / 3)


def test_doubling_chain_equals_separate_exponentials():
  from gapmmd_jax.losses import _kernels

  sq = jnp.asarray(np.random.default_rng(15).uniform(0, 50, size=(64, 64)), jnp.float32)
  inv = 1.0 / (3.0 * 2.0 ** jnp.arange(5))
  general = _kernels.gaussian_kernel(sq, _kernels.Kernel(inv, jnp.ones(5)))
  chained = jax.jit(
    lambda s: _kernels.gaussian_kernel(s, _kernels.Kernel(inv, jnp.ones(5), doubling=True))
  )(sq)
  np.testing.assert_allclose(chained, general, rtol=5e-6, atol=1e-7)


def test_large_mmd_and_its_gradient_never_hold_an_n_by_n_matrix():
  n = 16384  # one [n, n] float32 matrix would be 1 GiB
  spec = jax.ShapeDtypeStruct((n, 64), jnp.float32)
  for fn in (
    lambda a, b: g.mmd2(a, b),
    jax.grad(lambda a, b: g.mmd2(a, b, estimator="unbiased"), argnums=(0, 1)),
  ):
    compiled = jax.jit(fn).lower(spec, spec).compile()
    assert compiled.memory_analysis().temp_size_in_bytes < 0.3 * 2**30


def test_sizes_whose_square_overflows_int32_trace():
  spec = jax.ShapeDtypeStruct((65536, 2), jnp.float32)  # 65536^2 > 2^31
  for estimator in ("biased", "unbiased"):
    lowered = jax.jit(lambda a, b: g.mmd2(a, b, estimator=estimator)).lower(spec, spec)
    assert lowered.out_info.shape == () and lowered.out_info.dtype == jnp.float32


# ---------- kernel banks and the bandwidth's gradient ----------


# The sigmas of the Domain Separation Networks code (tensorflow/models,
# research/domain_adaptation/domain_separation/utils.py), typed from there, not from ours.
DSN_PUBLISHED_SIGMAS = (
  1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1, 5, 10, 15, 20, 25, 30, 35, 100, 1e3, 1e4, 1e5, 1e6,
)  # fmt: skip


def test_dsn_bank_is_the_dsn_kernel():
  # DSN's kernel: sum over sigma of exp(-|a - b|^2 / (2 sigma)), unit weights.
  x, y = samples(11, 30, 26, d=4, shift=0.3)
  x64, y64 = x.astype(np.float64), y.astype(np.float64)

  def dsn_kernel(a, b):
    sq = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return sum(np.exp(-sq / (2.0 * s)) for s in DSN_PUBLISHED_SIGMAS)

  expected = (
    dsn_kernel(x64, x64).mean() + dsn_kernel(y64, y64).mean() - 2 * dsn_kernel(x64, y64).mean()
  )
  np.testing.assert_array_equal(g.DSN_DISTANCE_SCALES, 2 * np.asarray(DSN_PUBLISHED_SIGMAS))
  np.testing.assert_allclose(
    g.mk_mmd2(x, y, distance_scales=g.DSN_DISTANCE_SCALES), expected, rtol=1e-5
  )
  np.testing.assert_allclose(
    g.mk_mmd2(x, y, distance_scales=g.DSN_DISTANCE_SCALES),
    g.mk_mmd2(x, y, distance_scales=g.DSN_DISTANCE_SCALES, weights=np.ones(19)),
    rtol=1e-6,
  )


def _central_difference(f, x, coordinates, eps=1e-5):
  out = []
  for i, j in coordinates:
    up, down = x.copy(), x.copy()
    up[i, j] += eps
    down[i, j] -= eps
    out.append((f(up) - f(down)) / (2 * eps))
  return np.asarray(out)


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_stop_bandwidth_gradient_holds_the_scale_constant(estimator):
  x, y = samples(12, 24, 20, d=3, shift=0.4)
  x64, y64 = x.astype(np.float64), y.astype(np.float64)
  held = ref_bandwidths(x64, y64)
  coordinates = [(0, 0), (3, 1), (17, 2), (23, 0)]
  with_scale_held = _central_difference(
    lambda a: ref_estimate(a, y64, held, [1.0] * 5, estimator), x64, coordinates
  )
  with_scale_moving = _central_difference(
    lambda a: ref_estimate(a, y64, ref_bandwidths(a, y64), [1.0] * 5, estimator), x64, coordinates
  )
  for stop, expected in ((True, with_scale_held), (False, with_scale_moving)):
    grads = jax.grad(lambda a: g.mmd2(a, y, estimator=estimator, stop_bandwidth_gradient=stop))(x)
    np.testing.assert_allclose(
      [grads[i, j] for i, j in coordinates], expected, rtol=2e-3, atol=2e-6
    )
  # The two gradients differ by 5x the tolerance or more: the test tells them apart.
  assert np.max(np.abs(with_scale_held - with_scale_moving)) > 1e-4
  np.testing.assert_allclose(
    g.mmd2(x, y, estimator=estimator, stop_bandwidth_gradient=True),
    g.mmd2(x, y, estimator=estimator),
    rtol=1e-6,
  )


# ---------- the tiled gradient ----------


def _dense_reference(estimator, n, m, bandwidths_of, weights):
  """MMD^2 from full kernel matrices, for float64 autodiff: ``bandwidths_of(x, y) -> [K]``."""

  def value(a, b, *args):
    bandwidths = bandwidths_of(a, b, *args)
    w = weights(*args) if callable(weights) else weights

    def k(p, q):
      sq = jnp.sum((p[:, None] - q[None]) ** 2, -1)
      return sum(w[i] * jnp.exp(-sq / bandwidths[i]) for i in range(len(bandwidths)))

    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    if estimator == "biased":
      return kxx.mean() + kyy.mean() - 2 * kxy.mean()
    off = lambda kk: kk.sum() - jnp.trace(kk)
    return off(kxx) / (n * (n - 1)) + off(kyy) / (m * (m - 1)) - 2 * kxy.mean()

  return value


def _mean_scale(a, b):
  z = jnp.concatenate([a, b])
  centred = z - z.mean(0)
  return 2 * len(z) * jnp.sum(centred * centred) / (len(z) ** 2 - len(z))


@pytest.mark.parametrize(
  "estimator, n, m, block_size, stop",
  [
    ("biased", 40, 40, None, False),  # one tile
    ("unbiased", 300, 300, 128, False),  # 3 x 3 tiles, padded
    ("biased", 45, 45, 7, True),  # 7 x 7 tiles, padded, bandwidth held constant
    ("unbiased", 30, 25, 8, True),  # n != m: upper tiles of the pooled [x; y], padded
    ("biased", 30, 25, 8, False),
    ("biased", 600, 600, None, False),  # default tiles: the gradient's walk spans 3 x 3
    ("unbiased", 600, 550, None, False),  # n != m, default tiles
  ],
)
def test_tiled_gradient_equals_dense_float64_autodiff(estimator, n, m, block_size, stop):
  rng = np.random.default_rng(n + m)
  x, y = rng.normal(size=(n, 5)), rng.normal(size=(m, 5)) + 0.3
  with jax.enable_x64(True):
    ours = lambda a, b: g.mmd2(
      a, b, estimator=estimator, block_size=block_size, stop_bandwidth_gradient=stop
    )
    value, tiled = jax.value_and_grad(ours, argnums=(0, 1))(x, y)
    np.testing.assert_allclose(value, ours(x, y), rtol=1e-12)  # one pass gives both

    def bandwidths(a, b):
      scale = _mean_scale(a, b)
      scale = jax.lax.stop_gradient(scale) if stop else scale
      return [scale / 4 * 2**i for i in range(5)]

    reference = _dense_reference(estimator, n, m, bandwidths, [1.0] * 5)
    dense = jax.jit(jax.grad(reference, argnums=(0, 1)))(x, y)  # one program, not op by op
  for ours, reference in zip(tiled, dense):
    np.testing.assert_allclose(ours, reference, rtol=1e-9, atol=1e-12)
  # float32 (the default) agrees within float32 tolerance.
  ours32 = jax.grad(
    lambda a: g.mmd2(
      a,
      y.astype(np.float32),
      estimator=estimator,
      block_size=block_size,
      stop_bandwidth_gradient=stop,
    )
  )(x.astype(np.float32))
  np.testing.assert_allclose(ours32, dense[0], rtol=2e-3, atol=2e-4 * np.abs(dense[0]).max())


@pytest.mark.parametrize("n, m", [(64, 64), (50, 37)])
def test_mk_mmd2_gradient_in_samples_bandwidths_and_weights(n, m):
  rng = np.random.default_rng(7)
  x, y = rng.normal(size=(n, 4)), rng.normal(size=(m, 4)) * 1.3
  bandwidths, weights = np.array([0.5, 2.0, 8.0, 40.0]), np.array([0.1, 0.4, 0.3, 0.2])
  with jax.enable_x64(True):
    for estimator in ("biased", "unbiased"):
      ours = jax.grad(
        lambda a, b, bw, w: g.mk_mmd2(
          a, b, distance_scales=bw, weights=w, estimator=estimator, block_size=16
        ),
        argnums=(0, 1, 2, 3),
      )(x, y, bandwidths, weights)
      dense = jax.jit(
        jax.grad(
          _dense_reference(estimator, n, m, lambda a, b, bw, w: bw, lambda bw, w: w),
          argnums=(0, 1, 2, 3),
        )
      )(x, y, bandwidths, weights)
      for a, b in zip(ours, dense):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
      # Only the kernel's parameters differentiated: the walk skips the rows' matmuls.
      only = jax.grad(
        lambda bw, w: g.mk_mmd2(
          x, y, distance_scales=bw, weights=w, estimator=estimator, block_size=16
        ),
        argnums=(0, 1),
      )(bandwidths, weights)
      for a, b in zip(only, dense[2:]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)

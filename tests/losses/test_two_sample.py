"""MMD-FUSE and MMDAgg on the tiled engine: float64 references, the authors' code,
calibration, power, memory."""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gapmmd_jax as g
from gapmmd_jax.losses import _kernels, _mmd, _two_sample
from tests.conftest import ANCHORS, needs_anchors


def _samples(seed, n, m, d=3, shift=0.0):
  rng = np.random.default_rng(seed)
  return (
    rng.normal(size=(n, d)).astype(np.float32),
    (rng.normal(size=(m, d)) + shift).astype(np.float32),
  )


def _grid64(z, norm, num):
  """float64 MMD-FUSE bandwidth grid and the full distance matrix."""
  diff = z[:, None] - z[None]
  dist = np.abs(diff).sum(-1) if norm == "l1" else np.sqrt((diff**2).sum(-1))
  upper = dist[np.triu_indices(len(z))]
  upper = np.sort(np.where(upper == 0, np.median(upper), upper))
  return (
    np.linspace(upper[int(len(upper) * 0.05)] / 2, upper[int(len(upper) * 0.95)] * 2, num),
    dist,
  )


def _fuse64(x, y, splits, kernels, num_bandwidths=10, lam=1.0):
  """float64 MMD-FUSE statistic of each split (bool ``[N]``, True = first sample)."""
  z = np.concatenate([x, y]).astype(np.float64)
  n, m = len(x), len(y)
  small = min(n, m)
  matrices = []
  for name in kernels:
    norm = "l1" if name == "laplace" else "l2"
    bandwidths, dist = _grid64(z, norm, num_bandwidths)
    for bw in bandwidths:
      k = (
        np.exp(-np.sqrt(2) * dist / bw) if name == "laplace" else np.exp(-(dist**2) / (2 * bw * bw))
      )
      np.fill_diagonal(k, 0.0)
      matrices.append(k)
  out = []
  for a in splits:
    values = []
    for k in matrices:
      mmd = (
        k[a][:, a].sum() / (n * (n - 1))
        + k[~a][:, ~a].sum() / (m * (m - 1))
        - 2 * k[a][:, ~a].mean()
      )
      values.append(
        small * (small - 1) * np.sqrt(small * (small - 1)) * mmd / np.sqrt((k**2).sum())
      )
    values = lam * np.asarray(values)
    out.append(values.max() + np.log(np.mean(np.exp(values - values.max()))))
  return np.asarray(out)


@pytest.mark.parametrize(
  "n,m,shift,kernels,chunk_size",
  [
    (40, 40, 0.0, ("laplace", "gaussian"), None),
    (30, 50, 0.3, ("laplace", "gaussian"), 23),
    (27, 19, 0.5, ("gaussian",), None),
    (12, 12, 0.2, ("laplace",), 5),
  ],
)
def test_fuse_matches_float64_reference(n, m, shift, kernels, chunk_size):
  x, y = _samples(n + m, n, m, shift=shift)
  key, draws = jax.random.key(3), 100
  result = g.mmd_fuse(
    key, x, y, num_draws=draws, kernels=kernels, block_size=16, chunk_size=chunk_size
  )
  statistic, p = result.statistic, result.p_value
  splits = np.concatenate(
    [(np.arange(n + m) < n)[None], np.asarray(_mmd.permutation_indicators(key, n, m, draws))]
  )
  reference = _fuse64(x, y, splits, kernels)
  np.testing.assert_allclose(statistic, reference[0], rtol=1e-4, atol=1e-4)
  margin = 1e-4 * np.abs(reference).max()
  low = np.sum(reference[1:] >= reference[0] + margin)
  high = np.sum(reference[1:] >= reference[0] - margin)
  assert (1 + low) / (1 + draws) - 1e-6 <= float(p) <= (1 + high) / (1 + draws) + 1e-6


def test_bandwidth_grid_matches_float64_and_subsamples():
  z = _samples(1, 60, 1)[0]
  for norm in ("l1", "l2"):
    np.testing.assert_allclose(
      _two_sample.bandwidth_grid(jnp.asarray(z), norm, 7),
      _grid64(z.astype(np.float64), norm, 7)[0],
      rtol=1e-5,
    )
  big = np.random.default_rng(2).normal(size=(5000, 2)).astype(np.float32)
  grid = _two_sample.bandwidth_grid(jnp.asarray(big), "l2", 4)
  np.testing.assert_allclose(grid, _grid64(big[::3].astype(np.float64), "l2", 4)[0], rtol=1e-4)


def test_bank_forms_match_dense():
  rng = np.random.default_rng(5)
  z, c = rng.normal(size=(37, 4)), rng.normal(size=(3, 37))
  bank = _kernels.KernelBank(jnp.asarray([0.7, 2.0]), jnp.asarray([1.5]))
  forms, squares = _kernels.bank_quadratic_forms(
    jnp.asarray(z, jnp.float32), jnp.asarray(c, jnp.float32), bank, block_size=10
  )
  diff = z[:, None] - z[None]
  kernels = [np.exp(-(diff**2).sum(-1) / (2 * bw * bw)) for bw in (0.7, 2.0)]
  kernels.append(np.exp(-np.sqrt(2) * np.abs(diff).sum(-1) / 1.5))
  for i, k in enumerate(kernels):
    shifted = k - 1.0
    np.testing.assert_allclose(
      forms[i], np.einsum("bi,ij,bj->b", c, shifted, c), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(squares[i], (k**2).sum() - len(z), rtol=1e-5)


@needs_anchors("mmdfuse")
def test_fuse_agrees_with_the_authors_code():
  """Same data, independent permutations: p-values within Monte-Carlo error (B = 2000, bound
  about 4 standard deviations of the difference)."""
  sys.path.insert(0, str(ANCHORS / "mmdfuse"))
  from mmdfuse import mmdfuse

  for n, m, shift in ((80, 120, 0.2), (100, 100, 0.25)):
    x, y = _samples(7, n, m, d=4, shift=shift)
    result = g.mmd_fuse(jax.random.key(1), x, y)
    _, ours = result.statistic, result.p_value
    _, theirs = mmdfuse(jnp.asarray(x), jnp.asarray(y), jax.random.PRNGKey(1), return_p_val=True)
    bound = 4 * np.sqrt(2 * float(theirs) * (1 - float(theirs)) / 2000) + 2 / 2001
    assert abs(float(ours) - float(theirs)) <= bound


def test_fuse_calibrated_and_powerful():
  """1000 null data sets at level 0.05, rejection rate in [0.03, 0.07] (about -2.9 / +2.9
  binomial standard deviations), and a mean shift; fixed seeds."""

  def rejection_rate(shift, num_draws):
    def one(k):
      kx, ky, kp = jax.random.split(k, 3)
      x = jax.random.normal(kx, (20, 2))
      y = jax.random.normal(ky, (20, 2)) + shift
      return g.mmd_fuse(kp, x, y, num_draws=99, num_bandwidths=4).p_value

    p = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(4), num_draws))
    return float(jnp.mean(p <= 0.05))

  assert 0.03 <= rejection_rate(0.0, 1000) <= 0.07
  assert rejection_rate(1.5, 300) >= 0.9


def test_fuse_memory_stays_tiled():
  """Doubling n adds O(n) temporaries (the draws' coefficients), not O(n^2): at n = 16384 an
  [N, N] float32 matrix would be 4 GiB."""

  def temp_mib(n, d=8):
    x = jax.ShapeDtypeStruct((n, d), jnp.float32)
    compiled = (
      jax.jit(lambda k, a, b: g.mmd_fuse(k, a, b, num_draws=64))
      .lower(jax.random.key(0), x, x)
      .compile()
    )
    analysis = compiled.memory_analysis()
    if analysis is None:
      pytest.skip("this backend reports no memory analysis")
    return analysis.temp_size_in_bytes / 2**20

  small, large = temp_mib(8192), temp_mib(16384)
  assert large < small + 40 and large < 4096 / 16


def test_fuse_on_identical_points_is_finite():
  x = np.ones((8, 3), np.float32)
  result = g.mmd_fuse(jax.random.key(0), x, x, num_draws=20)
  statistic, p = result.statistic, result.p_value
  assert np.isfinite(statistic) and float(p) == 1.0
  y = np.concatenate([np.zeros((6, 2)), np.ones((2, 2))]).astype(np.float32)
  result = g.mmd_fuse(jax.random.key(0), y, y[::-1], num_draws=20)
  statistic, p = result.statistic, result.p_value
  assert np.isfinite(statistic) and 0 < float(p) <= 1


def test_fuse_rejects_bad_input():
  x, y = _samples(0, 10, 10)
  with pytest.raises(ValueError, match="kernels"):
    g.mmd_fuse(jax.random.key(0), x, y, kernels=("gaussian", "gaussian"))
  with pytest.raises(ValueError, match="kernels must be one of"):
    g.mmd_fuse(jax.random.key(0), x, y, kernels=("imq",))
  with pytest.raises(ValueError, match="at least 2 rows"):
    g.mmd_fuse(jax.random.key(0), x[:1], y)
  with pytest.raises(ValueError, match="num_bandwidths"):
    g.mmd_fuse(jax.random.key(0), x, y, num_bandwidths=1)


_TILED = {  # every public function that takes tiling arguments: (x, y, key, **tiling) -> result
  "mmd2": lambda x, y, key, **t: g.mmd2(x, y, **t),
  "mk_mmd2": lambda x, y, key, **t: g.mk_mmd2(x, y, distance_scales=np.array([1.0, 2.0]), **t),
  "class_mmd_matrix": lambda x, y, key, **t: g.class_mmd_matrix(
    np.concatenate([x, y]), np.repeat([0, 1], 10), num_classes=2, **t
  ),
  "mmd_test": lambda x, y, key, **t: g.mmd_test(key, x, y, num_draws=9, **t),
  "mmd_fuse": lambda x, y, key, **t: g.mmd_fuse(key, x, y, num_draws=9, **t),
  "mmd_agg": lambda x, y, key, **t: g.mmd_agg(key, x, y, num_draws=9, num_correction_draws=9, **t),
}


_BAD_TILING = [
  ({"block_size": 0}, "block_size must be an integer >= 1, got 0"),
  ({"block_size": 1.5}, "block_size must be an integer >= 1, got 1.5"),
  ({"chunk_size": 0}, "chunk_size must be an integer >= 1, got 0"),
  ({"chunk_size": -3}, "chunk_size must be an integer >= 1, got -3"),
]


@pytest.mark.parametrize(
  "name, tiling, message",
  [
    (name, tiling, message)
    for name in sorted(_TILED)
    for tiling, message in _BAD_TILING
    # the single statistics walk no draws, so they take no chunk_size
    if not ("chunk_size" in tiling and name in ("mmd2", "mk_mmd2", "class_mmd_matrix"))
  ],
)
def test_tiling_arguments_are_checked(name, tiling, message):
  """A chunk or tile size that is not a positive integer is a clear error, not a
  ZeroDivisionError, a shape error deep in the walk, or a silently ignored 0."""
  x, y = _samples(0, 10, 10)
  with pytest.raises(ValueError, match=message):
    _TILED[name](x, y, jax.random.key(0), **tiling)


def test_every_key_taking_function_accepts_legacy_keys():
  """mmd_test, mmd_fuse, mmd_agg, virtual_adversarial_perturbation and vat_loss: a legacy
  ``PRNGKey`` gives what the same key wrapped as a typed key gives."""
  x, y = _samples(9, 12, 12)
  legacy = jax.random.PRNGKey(11)
  typed = jax.random.wrap_key_data(legacy)
  for test in (g.mmd_test, g.mmd_fuse):
    jax.tree.map(
      np.testing.assert_array_equal,
      test(legacy, x, y, num_draws=30),
      test(typed, x, y, num_draws=30),
    )
  for shape in (12, 15):  # the wild bootstrap, then permutations
    agg = lambda key: g.mmd_agg(
      key,
      x,
      y[:shape] if shape < 12 else np.concatenate([y, y[: shape - 12]]),
      num_draws=30,
      num_correction_draws=30,
    )
    jax.tree.map(np.testing.assert_array_equal, agg(legacy), agg(typed))
  logits_fn = lambda a: a @ jnp.ones((3, 4)) * jnp.arange(1.0, 5.0)
  for fn in (g.virtual_adversarial_perturbation, g.vat_loss):
    np.testing.assert_array_equal(
      fn(legacy, logits_fn, x, xi=1e-6, eps=0.5), fn(typed, logits_fn, x, xi=1e-6, eps=0.5)
    )


def test_rows_sharded_over_four_devices_give_the_single_device_tests():
  """mmd_test (both methods), mmd_fuse and mmd_agg on rows sharded over an explicit (and an
  automatic) mesh of 4 forced CPU devices: the same statistics, p-values and decisions, each
  device walking a quarter of the tiles (tests/losses/_sharded_two_sample_run.py)."""
  script = pathlib.Path(__file__).with_name("_sharded_two_sample_run.py")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  done = subprocess.run(
    [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600
  )
  assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


# ---- MMDAgg ----


def _agg_bandwidths64(x, y, norm, num):
  """float64 MMDAgg grid from the formulas: distances |x_i - y_j|, i >= j, of the first 500."""
  xs, ys = x[:500].astype(np.float64), y[:500].astype(np.float64)
  diff = ys[:, None] - xs[None]
  cross = np.abs(diff).sum(-1) if norm == "l1" else np.sqrt((diff**2).sum(-1))
  d = cross[np.triu_indices(len(ys), m=len(xs))]
  d = np.where(d == 0, np.median(d), d)
  ordered = np.sort(d)
  low = (max(ordered[int(len(d) * 0.05)], 0.1) if d.min() < 0.1 else d.min()) / 2
  high = max(d.max(), 0.3) * 2
  return low * (high / low) ** (np.arange(num) / (num - 1))


def _agg64(
  x,
  y,
  draws,
  method,
  alpha=0.05,
  num_draws=None,
  kernels=("laplace", "gaussian"),
  num_bandwidths=10,
  steps=50,
):
  """float64 MMDAgg from the paper's formulas on the given draws: (reject, p, stats, u)."""
  x64, y64 = x.astype(np.float64), y.astype(np.float64)
  n, m = len(x), len(y)
  z = np.concatenate([x64, y64])
  stats = []
  for name in kernels:
    norm = "l1" if name == "laplace" else "l2"
    diff = z[:, None] - z[None]
    dist = np.abs(diff).sum(-1) if norm == "l1" else np.sqrt((diff**2).sum(-1))
    for lam in _agg_bandwidths64(x, y, norm, num_bandwidths):
      k = np.exp(-dist / lam) if name == "laplace" else np.exp(-((dist / lam) ** 2))
      row = []
      if method == "wild-bootstrap":
        h = k[:n, :n] + k[n:, n:] - k[:n, n:] - k[n:, :n]
        np.fill_diagonal(h, 0.0)
        for e in np.concatenate([np.ones((1, n)), draws]):
          row.append(e @ h @ e / (n * (n - 1)))
      else:
        np.fill_diagonal(k, 0.0)
        for a in np.concatenate([(np.arange(n + m) < n)[None], draws.astype(bool)]):
          row.append(
            k[a][:, a].sum() / (n * (n - 1))
            + k[~a][:, ~a].sum() / (m * (m - 1))
            - 2 * k[a][:, ~a].mean()
          )
      stats.append(row)
  stats = np.asarray(stats)
  b1 = num_draws
  # The bisection and the quantile index in float32, as the authors' code computes them: in
  # float64 (B1 + 1)(1 - u w) lands on the other side of an integer for some dyadic u.
  f32 = np.float32
  w = np.tile(np.full(num_bandwidths, 1 / num_bandwidths) / len(kernels), len(kernels)).astype(f32)
  ordered = np.sort(stats[:, : b1 + 1], axis=1)
  quant = lambda u: ordered[
    np.arange(len(w)), np.clip(np.ceil(f32(b1 + 1) * (f32(1) - f32(u) * w)).astype(int) - 1, 0, b1)
  ]
  low, high = f32(0.0), np.min(f32(1) / w)
  for _ in range(steps):
    u = (low + high) / f32(2)
    if np.mean(np.any(stats[:, b1 + 1 :] > quant(u)[:, None], axis=0)) <= alpha:
      low = u
    else:
      high = u
  p = np.mean(ordered >= stats[:, :1], axis=1)
  return bool(np.any(p <= low * w)), p, stats, low


@pytest.mark.parametrize(
  "n,m,shift,method,chunk_size",
  [
    (30, 30, 0.4, "wild-bootstrap", None),
    (25, 25, 0.0, "wild-bootstrap", 37),
    (20, 28, 0.5, "permutation", None),
    (24, 26, 0.3, "permutation", 50),
  ],
)
def test_agg_matches_float64_reference(n, m, shift, method, chunk_size):
  """Every draw's statistic of every kernel, the bandwidths, and the aggregation (on the same
  statistics) against float64 formulas; the end-to-end decision where no tie decides it."""
  x, y = _samples(n + m + 1, n, m, shift=shift)
  b1, b2 = 99, 120
  key = jax.random.key(5)
  draws = (
    np.asarray(_mmd.sign_rows(key, n, jnp.arange(b1 + b2)))
    if method == "wild-bootstrap"
    else np.asarray(_mmd.permutation_indicators(key, n, m, b1 + b2))
  )
  reject, p, stats, u = _agg64(x, y, draws, method, num_draws=b1)
  bandwidths = np.concatenate(
    [_agg_bandwidths64(x, y, "l1", 10), _agg_bandwidths64(x, y, "l2", 10)]
  )
  bank = _kernels.KernelBank(
    jnp.asarray(bandwidths[10:] / np.sqrt(2), jnp.float32),
    jnp.asarray(bandwidths[:10] * np.sqrt(2), jnp.float32),
  )
  ours = _two_sample._agg_statistics(
    key, jnp.asarray(x), jnp.asarray(y), None, b1 + b2, bank, method, chunk_size, 16
  )
  ours = np.concatenate([ours[10:], ours[:10]])  # the bank's Gaussians first
  scale = np.abs(stats).max(axis=1, keepdims=True)
  assert np.all(np.abs(ours - stats) <= 2e-4 * scale)  # relative to each kernel's largest
  # The aggregation on the float64 statistics (rounded to float32) is the reference's.
  weight = jnp.full(20, 0.05, jnp.float32)
  aggregated = _two_sample._aggregate(jnp.asarray(stats, jnp.float32), weight, 0.05, b1, 50)
  np.testing.assert_allclose(aggregated.p_values, p, atol=1e-6)
  np.testing.assert_allclose(aggregated.thresholds, u * 0.05, rtol=1e-5)
  assert bool(aggregated.reject) == reject
  result = g.mmd_agg(
    key,
    x,
    y,
    num_draws=b1,
    num_correction_draws=b2,
    method=method,
    chunk_size=chunk_size,
    block_size=16,
  )
  given = g.mmd_agg(
    jax.random.key(0),
    x,
    y,
    num_draws=b1,
    num_correction_draws=b2,
    method=method,
    draws=draws,
    block_size=16,
  )
  # The draws mmd_agg makes from the key are these.
  jax.tree.map(lambda own, fed: np.testing.assert_allclose(own, fed, 1e-6, 1e-9), result, given)
  np.testing.assert_allclose(result.bandwidths, bandwidths, rtol=1e-5)
  np.testing.assert_allclose(result.statistics, stats[:, 0], rtol=2e-4, atol=2e-6)
  if np.min(np.abs(p - u * 0.05)) > 1.5 / (b1 + 1):  # else one rounding may flip it
    assert bool(result.reject) == reject


def test_bank_paired_forms_match_dense():
  rng = np.random.default_rng(6)
  x, y, e = rng.normal(size=(23, 3)), rng.normal(size=(23, 3)) + 0.3, rng.normal(size=(4, 23))
  bank = _kernels.KernelBank(jnp.asarray([0.8]), jnp.asarray([1.1, 3.0]))
  forms = _kernels.bank_paired_forms(
    *(jnp.asarray(a, jnp.float32) for a in (x, y, e)), bank, block_size=7
  )

  def kernel(a, b, i):
    diff = a[:, None] - b[None]
    if i == 0:
      return np.exp(-(diff**2).sum(-1) / (2 * 0.8**2))
    return np.exp(-np.sqrt(2) * np.abs(diff).sum(-1) / (1.1, 3.0)[i - 1])

  for i in range(3):
    h = kernel(x, x, i) + kernel(y, y, i) - kernel(x, y, i) - kernel(y, x, i)
    np.fill_diagonal(h, 0.0)
    np.testing.assert_allclose(forms[i], np.einsum("bi,ij,bj->b", e, h, e), rtol=1e-4, atol=1e-4)


def test_aggregation_weights():
  w = {kind: _two_sample.aggregation_weights(4, kind) for kind in _two_sample.AGG_WEIGHTS}
  h = 1 + 1 / 2 + 1 / 3 + 1 / 4
  np.testing.assert_allclose(w["uniform"], [0.25] * 4)
  np.testing.assert_allclose(w["decreasing"], [1 / h, 1 / (2 * h), 1 / (3 * h), 1 / (4 * h)])
  np.testing.assert_allclose(w["increasing"], w["decreasing"][::-1])
  np.testing.assert_allclose(w["centred"], np.array([1 / 2, 1 / 1, 1 / 1, 1 / 2]) / 3)
  np.testing.assert_allclose(
    _two_sample.aggregation_weights(3, "centred"), np.array([1 / 2, 1, 1 / 2]) / 2
  )


def _anchor_draws(seed, n, m, b1, b2):
  """The draws MMDAgg's JAX code makes from ``seed``, less its observed row at ``b1``
  (its random calls, repeated here to feed the same draws to ours)."""
  _, sub = jax.random.split(jax.random.PRNGKey(seed))
  if n == m:
    signs = jax.random.choice(sub, jnp.array([-1.0, 1.0]), shape=(b1 + b2 + 1, n))
    return np.delete(np.asarray(signs), b1, axis=0)
  rows = jnp.tile(jnp.arange(n + m), (b1 + b2 + 1, 1))
  index = jax.random.permutation(sub, rows, axis=1, independent=True)
  return np.delete(np.asarray(index < n), b1, axis=0)


@needs_anchors("mmdagg")
def test_agg_same_decisions_as_the_authors_code_on_the_same_draws():
  sys.path.insert(0, str(ANCHORS / "mmdagg"))
  from mmdagg.jax import mmdagg

  # The wild bootstrap at the defaults (the shapes of the power test: one compilation of
  # theirs, which is slow), then permutations.
  for n, m, d, shift, b1 in ((100, 100, 2, 0.3, 2000), (50, 70, 3, 0.6, 300)):
    b2 = b1
    x, y = _samples(n * m, n, m, d=d, shift=shift)
    decision, info = mmdagg(
      jnp.asarray(x), jnp.asarray(y), seed=7, B1=b1, B2=b2, return_dictionary=True
    )
    tests = sorted(
      (k for k in info if k.startswith("Single")),
      key=lambda k: tuple(int(t) for t in k.split()[-1].split(".")),
    )
    theirs = {
      field: np.array([float(info[k][field]) for k in tests])
      for field in ("MMD", "p-value", "p-value threshold", "Bandwidth")
    }
    ours = g.mmd_agg(
      jax.random.key(0),
      x,
      y,
      num_draws=b1,
      num_correction_draws=b2,
      draws=_anchor_draws(7, n, m, b1, b2),
    )
    assert bool(ours.reject) == bool(decision)
    np.testing.assert_allclose(ours.bandwidths, theirs["Bandwidth"], rtol=1e-5)
    np.testing.assert_allclose(ours.statistics, theirs["MMD"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours.p_values, theirs["p-value"], atol=1.5 / (b1 + 1))
    np.testing.assert_allclose(ours.thresholds, theirs["p-value threshold"], rtol=1e-5)


@pytest.mark.parametrize("n,m", [(30, 30), (24, 36)])
def test_agg_calibrated_at_level(n, m):
  """1000 null data sets at level 0.05: rejection rate in [0.03, 0.07] (about -2.9 / +2.9
  binomial standard deviations for an exact level; fixed seeds). Wild bootstrap, then
  permutations. 1000 + 1000 draws: with 199 + 199 the test (ours and the authors' code alike,
  checked on 300 sets: 0.027 each) is conservative, the quantiles being coarse."""

  def one(k):
    kx, ky, kt = jax.random.split(k, 3)
    x, y = jax.random.normal(kx, (n, 2)), jax.random.normal(ky, (m, 2))
    return g.mmd_agg(kt, x, y, num_draws=1000, num_correction_draws=1000, num_bandwidths=5).reject

  rate = float(jnp.mean(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(8), 1000))))
  assert 0.03 <= rate <= 0.07


def _blobs(rng, n, correlation):
  """A 3 x 3 grid of unit Gaussians 5 apart; ``correlation`` of the two coordinates."""
  centres = np.stack(np.meshgrid([-5.0, 0.0, 5.0], [-5.0, 0.0, 5.0]), -1).reshape(9, 2)
  noise = rng.multivariate_normal([0, 0], [[1, correlation], [correlation, 1]], size=n)
  return (centres[rng.integers(0, 9, n)] + noise).astype(np.float32)


@needs_anchors("mmdagg", "mmdfuse")
@pytest.mark.parametrize("problem", ["mean-shift", "blobs"])
def test_agg_and_fuse_as_powerful_as_the_authors_code(problem):
  """30 data sets per problem, independent draws: our rejection rate at least the authors'
  less 0.1 (the Monte-Carlo spread of paired decisions)."""
  sys.path[:0] = [str(ANCHORS / "mmdagg"), str(ANCHORS / "mmdfuse")]
  from mmdagg.jax import mmdagg
  from mmdfuse import mmdfuse

  ours_agg = jax.jit(lambda k, a, b: g.mmd_agg(k, a, b).reject)
  ours_fuse = jax.jit(lambda k, a, b: g.mmd_fuse(k, a, b).p_value <= 0.05)
  rng = np.random.default_rng(11)
  counts = np.zeros(4)
  for trial in range(30):
    if problem == "mean-shift":
      x = rng.normal(size=(100, 2)).astype(np.float32)
      y = (rng.normal(size=(100, 2)) + 0.3).astype(np.float32)
    else:
      x, y = _blobs(rng, 100, 0.0), _blobs(rng, 100, 0.9)
    key = jax.random.key(trial)
    counts += [
      bool(ours_agg(key, x, y)),
      int(mmdagg(jnp.asarray(x), jnp.asarray(y), seed=trial)),
      bool(ours_fuse(key, x, y)),
      int(mmdfuse(jnp.asarray(x), jnp.asarray(y), jax.random.PRNGKey(trial))),
    ]
  rates = counts / 30
  assert rates[0] >= rates[1] - 0.1 and rates[2] >= rates[3] - 0.1, rates
  assert rates.min() >= 0.2, rates  # the problems are hard enough, but not hopeless


def test_agg_memory_stays_tiled():
  """Doubling n adds O(n) temporaries, not O(n^2), for the wild bootstrap and permutations."""

  def temp_mib(n, m, d=8):
    a, b = jax.ShapeDtypeStruct((n, d), jnp.float32), jax.ShapeDtypeStruct((m, d), jnp.float32)
    compiled = (
      jax.jit(
        lambda k, a, b: g.mmd_agg(k, a, b, num_draws=32, num_correction_draws=32, num_bandwidths=3)
      )
      .lower(jax.random.key(0), a, b)
      .compile()
    )
    analysis = compiled.memory_analysis()
    if analysis is None:
      pytest.skip("this backend reports no memory analysis")
    return analysis.temp_size_in_bytes / 2**20

  for ratio in (1, 2):  # n == m: the wild bootstrap; else permutations
    small, large = temp_mib(8192, 8192 * ratio), temp_mib(16384, 16384 * ratio)
    assert large < small + 40 and large < 4096 / 16


def test_agg_rejects_bad_input():
  x, y = _samples(0, 10, 12)
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="n == m"):
    g.mmd_agg(key, x, y, method="wild-bootstrap")
  with pytest.raises(ValueError, match="alpha"):
    g.mmd_agg(key, x, y, alpha=1.5)
  with pytest.raises(ValueError, match="draws must have shape"):
    g.mmd_agg(key, x, y, num_draws=5, num_correction_draws=5, draws=np.ones((10, 10), bool))
  with pytest.raises(ValueError, match="weights"):
    g.mmd_agg(key, x, y, weights="flat")
  with pytest.raises(ValueError, match="bandwidths must have shape"):
    g.mmd_agg(key, x, y, bandwidths=np.ones((2, 2)))

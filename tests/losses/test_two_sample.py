"""MMD-FUSE on the tiled engine: float64 reference, the authors' code, calibration, memory."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gapmmd_jax as g
from gapmmd_jax.losses import _kernels, _mmd, _two_sample

ANCHORS = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "anchors"


def _samples(seed, n, m, d=3, shift=0.0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, d)).astype(np.float32),
          (rng.normal(size=(m, d)) + shift).astype(np.float32))


def _grid64(z, norm, num):
  """float64 MMD-FUSE bandwidth grid and the full distance matrix."""
  diff = z[:, None] - z[None]
  dist = np.abs(diff).sum(-1) if norm == "l1" else np.sqrt((diff ** 2).sum(-1))
  upper = dist[np.triu_indices(len(z))]
  upper = np.sort(np.where(upper == 0, np.median(upper), upper))
  return (np.linspace(upper[int(len(upper) * 0.05)] / 2, upper[int(len(upper) * 0.95)] * 2, num),
          dist)


def _fuse64(x, y, splits, kernels, num_bandwidths=10, lam=1.0):
  """float64 MMD-FUSE statistic of each split (bool ``[N]``, True = first sample)."""
  z = np.concatenate([x, y]).astype(np.float64)
  n, m = len(x), len(y)
  small = min(n, m)
  matrices = []
  for name in kernels:
    norm = "l1" if name == "laplace" else "l2"
    bandwidths, dist = _grid64(z, norm, num_bandwidths)
    for l in bandwidths:
      k = np.exp(-np.sqrt(2) * dist / l) if name == "laplace" else np.exp(-dist ** 2 / (2 * l * l))
      np.fill_diagonal(k, 0.0)
      matrices.append(k)
  out = []
  for a in splits:
    values = []
    for k in matrices:
      mmd = (k[a][:, a].sum() / (n * (n - 1)) + k[~a][:, ~a].sum() / (m * (m - 1))
             - 2 * k[a][:, ~a].mean())
      values.append(small * (small - 1) * np.sqrt(small * (small - 1)) * mmd
                    / np.sqrt((k ** 2).sum()))
    values = lam * np.asarray(values)
    out.append(values.max() + np.log(np.mean(np.exp(values - values.max()))))
  return np.asarray(out)


@pytest.mark.parametrize("n,m,shift,kernels,chunk_size", [
    (40, 40, 0.0, ("laplace", "gaussian"), None), (30, 50, 0.3, ("laplace", "gaussian"), 23),
    (27, 19, 0.5, ("gaussian",), None), (12, 12, 0.2, ("laplace",), 5)])
def test_fuse_matches_float64_reference(n, m, shift, kernels, chunk_size):
  x, y = _samples(n + m, n, m, shift=shift)
  key, draws = jax.random.key(3), 100
  statistic, p = g.mmd_fuse(key, x, y, num_permutations=draws, kernels=kernels, block_size=16,
                            chunk_size=chunk_size)
  splits = np.concatenate([(np.arange(n + m) < n)[None],
                           np.asarray(_mmd.permutation_indicators(key, n, m, draws))])
  reference = _fuse64(x, y, splits, kernels)
  np.testing.assert_allclose(statistic, reference[0], rtol=1e-4, atol=1e-4)
  margin = 1e-4 * np.abs(reference).max()
  low = np.sum(reference[1:] >= reference[0] + margin)
  high = np.sum(reference[1:] >= reference[0] - margin)
  assert (1 + low) / (1 + draws) - 1e-6 <= float(p) <= (1 + high) / (1 + draws) + 1e-6


def test_bandwidth_grid_matches_float64_and_subsamples():
  z = _samples(1, 60, 1)[0]
  for norm in ("l1", "l2"):
    np.testing.assert_allclose(_two_sample.bandwidth_grid(jnp.asarray(z), norm, 7),
                               _grid64(z.astype(np.float64), norm, 7)[0], rtol=1e-5)
  big = np.random.default_rng(2).normal(size=(5000, 2)).astype(np.float32)
  grid = _two_sample.bandwidth_grid(jnp.asarray(big), "l2", 4)
  np.testing.assert_allclose(grid, _grid64(big[::3].astype(np.float64), "l2", 4)[0], rtol=1e-4)


def test_bank_forms_match_dense():
  rng = np.random.default_rng(5)
  z, c = rng.normal(size=(37, 4)), rng.normal(size=(3, 37))
  bank = _kernels.KernelBank(jnp.asarray([0.7, 2.0]), jnp.asarray([1.5]))
  forms, squares = _kernels.bank_quadratic_forms(jnp.asarray(z, jnp.float32),
                                                 jnp.asarray(c, jnp.float32), bank, block_size=10)
  diff = z[:, None] - z[None]
  kernels = [np.exp(-(diff ** 2).sum(-1) / (2 * l * l)) for l in (0.7, 2.0)]
  kernels.append(np.exp(-np.sqrt(2) * np.abs(diff).sum(-1) / 1.5))
  for i, k in enumerate(kernels):
    shifted = k - 1.0
    np.testing.assert_allclose(forms[i], np.einsum("bi,ij,bj->b", c, shifted, c), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(squares[i], (k ** 2).sum() - len(z), rtol=1e-5)


@pytest.mark.skipif(not (ANCHORS / "mmdfuse").is_dir(), reason="needs ../shared/anchors/mmdfuse")
def test_fuse_agrees_with_the_authors_code():
  """Same data, independent permutations: p-values within Monte-Carlo error (B = 2000, bound
  about 4 standard deviations of the difference)."""
  sys.path.insert(0, str(ANCHORS / "mmdfuse"))
  from mmdfuse import mmdfuse

  for n, m, shift in ((80, 120, 0.2), (100, 100, 0.25)):
    x, y = _samples(7, n, m, d=4, shift=shift)
    _, ours = g.mmd_fuse(jax.random.key(1), x, y)
    _, theirs = mmdfuse(jnp.asarray(x), jnp.asarray(y), jax.random.PRNGKey(1), return_p_val=True)
    bound = 4 * np.sqrt(2 * float(theirs) * (1 - float(theirs)) / 2000) + 2 / 2001
    assert abs(float(ours) - float(theirs)) <= bound


def test_fuse_calibrated_and_powerful():
  """300 null data sets at level 0.05 (bounds about -2.4 / +3.2 binomial standard deviations)
  and a mean shift, fixed seeds."""
  def rejection_rate(shift, num_draws=300):
    def one(k):
      kx, ky, kp = jax.random.split(k, 3)
      x = jax.random.normal(kx, (20, 2))
      y = jax.random.normal(ky, (20, 2)) + shift
      return g.mmd_fuse(kp, x, y, num_permutations=99, num_bandwidths=4)[1]

    p = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(4), num_draws))
    return float(jnp.mean(p <= 0.05))

  assert 0.02 <= rejection_rate(0.0) <= 0.09
  assert rejection_rate(1.5) >= 0.9


def test_fuse_memory_stays_tiled():
  """Doubling n adds O(n) temporaries (the draws' coefficients), not O(n^2): at n = 16384 an
  [N, N] float32 matrix would be 4 GiB."""
  def temp_mib(n, d=8):
    x = jax.ShapeDtypeStruct((n, d), jnp.float32)
    compiled = jax.jit(lambda k, a, b: g.mmd_fuse(k, a, b, num_permutations=64)).lower(
        jax.random.key(0), x, x).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
      pytest.skip("this backend reports no memory analysis")
    return analysis.temp_size_in_bytes / 2**20

  small, large = temp_mib(8192), temp_mib(16384)
  assert large < small + 40 and large < 4096 / 16


def test_fuse_on_identical_points_is_finite():
  x = np.ones((8, 3), np.float32)
  statistic, p = g.mmd_fuse(jax.random.key(0), x, x, num_permutations=20)
  assert np.isfinite(statistic) and float(p) == 1.0
  y = np.concatenate([np.zeros((6, 2)), np.ones((2, 2))]).astype(np.float32)
  statistic, p = g.mmd_fuse(jax.random.key(0), y, y[::-1], num_permutations=20)
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


def test_every_key_taking_function_accepts_legacy_keys():
  """mmd_test, mmd_fuse, virtual_adversarial_perturbation and vat_loss: a legacy
  ``PRNGKey`` gives what the same key wrapped as a typed key gives."""
  x, y = _samples(9, 12, 12)
  legacy = jax.random.PRNGKey(11)
  typed = jax.random.wrap_key_data(legacy)
  for test in (g.mmd_test, g.mmd_fuse):
    np.testing.assert_array_equal(test(legacy, x, y, num_permutations=30),
                                  test(typed, x, y, num_permutations=30))
  logits_fn = lambda a: a @ jnp.ones((3, 4)) * jnp.arange(1.0, 5.0)
  for fn in (g.virtual_adversarial_perturbation, g.vat_loss):
    np.testing.assert_array_equal(fn(logits_fn, x, legacy, xi=1e-6, eps=0.5),
                                  fn(logits_fn, x, typed, xi=1e-6, eps=0.5))

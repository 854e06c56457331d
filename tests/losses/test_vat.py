"""Virtual adversarial perturbation and loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gapmmd_jax as g


def linear_model(seed=0, d=6, c=4):
  w = jax.random.normal(jax.random.key(seed), (d, c))
  return w, (lambda x: x @ w)


def kl_hessian(w, x):
  """Hessian of KL(p(x) || p(x + r)) at r = 0 for logits x @ w: W (diag p - p p^T) W^T."""
  p = np.asarray(jax.nn.softmax(x @ w), np.float64)
  w = np.asarray(w, np.float64)
  return w @ (np.diag(p) - np.outer(p, p)) @ w.T


@pytest.mark.parametrize(
  "finite_difference,xi,alignment", [("linearized", 1e-6, 0.9999), ("direct", 1e-1, 0.995)]
)
def test_power_iteration_finds_top_eigenvector(finite_difference, xi, alignment):
  """A real finite difference (direct, xi = 0.1) is only close; the xi -> 0 limit is exact."""
  w, logits_fn = linear_model()
  x = jax.random.normal(jax.random.key(1), (5, 6))
  r = g.virtual_adversarial_perturbation(
    jax.random.key(2),
    logits_fn,
    x,
    xi=xi,
    eps=2.0,
    num_iterations=100,
    finite_difference=finite_difference,
  )
  np.testing.assert_allclose(jnp.linalg.norm(r, axis=1), 2.0, rtol=1e-5)
  for example, direction in zip(np.asarray(x), np.asarray(r)):
    top = np.linalg.eigh(kl_hessian(w, example))[1][:, -1]
    assert abs(top @ direction / 2.0) > alignment


def test_linearized_is_sound_where_direct_difference_is_noise():
  """At xi = 1e-6 in float32, f(x + r) - f(x) is rounding noise; the jvp is not."""
  w, logits_fn = linear_model(3)
  w = w * 0.01  # moderate logits for inputs of size ~100, where the float32 grid is coarse
  logits_fn = lambda a: a @ w
  x = 100.0 * jax.random.normal(jax.random.key(4), (8, 6))
  kwargs = dict(xi=1e-6, eps=1.0, num_iterations=20)
  lin = g.virtual_adversarial_perturbation(jax.random.key(5), logits_fn, x, **kwargs)
  direct = g.virtual_adversarial_perturbation(
    jax.random.key(5), logits_fn, x, finite_difference="direct", **kwargs
  )
  lin_align, direct_align = [], []
  for example, a, b in zip(np.asarray(x), np.asarray(lin), np.asarray(direct)):
    hessian = kl_hessian(w, example)
    if np.linalg.eigvalsh(hessian)[-1] < 1e-12:
      continue
    top = np.linalg.eigh(hessian)[1][:, -1]
    lin_align.append(abs(top @ a))
    direct_align.append(abs(top @ b))
  assert lin_align and min(lin_align) > 0.99
  assert np.mean(direct_align) < np.mean(lin_align)


def test_vat_loss_matches_kl_and_gradients_flow():
  _, logits_fn = linear_model(6)
  x = jax.random.normal(jax.random.key(7), (4, 6))
  key = jax.random.key(8)
  r = g.virtual_adversarial_perturbation(key, logits_fn, x, xi=1e-6, eps=1.5)
  p = np.asarray(jax.nn.softmax(logits_fn(x)), np.float64)
  q = np.asarray(jax.nn.softmax(logits_fn(x + r)), np.float64)
  expected = np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))
  loss = g.vat_loss(key, logits_fn, x, xi=1e-6, eps=1.5)
  np.testing.assert_allclose(loss, expected, rtol=1e-4)
  np.testing.assert_allclose(
    jax.jit(lambda a: g.vat_loss(key, logits_fn, a, xi=1e-6, eps=1.5))(x), loss, rtol=1e-5
  )
  grad = jax.grad(lambda a: g.vat_loss(key, logits_fn, a, xi=1e-6, eps=1.5))(x)
  assert np.all(np.isfinite(grad)) and np.any(grad != 0)


class BatchNormNet(nnx.Module):
  def __init__(self, *, rngs):
    self.dense = nnx.Linear(6, 8, rngs=rngs)
    self.norm = nnx.BatchNorm(8, rngs=rngs)
    self.out = nnx.Linear(8, 3, rngs=rngs)

  def __call__(self, x):
    return self.out(nnx.relu(self.norm(self.dense(x))))


def test_perturbed_passes_leave_batchnorm_statistics_alone():
  """The documented pattern: logits_fn merges the state and discards what the pass updates."""
  graphdef, params, stats = nnx.split(BatchNormNet(rngs=nnx.Rngs(0)), nnx.Param, nnx.BatchStat)
  x = jax.random.normal(jax.random.key(1), (16, 6)) * 3 + 1

  @jax.jit
  def loss_fn(params, stats, inputs):
    def logits_fn(a):  # train mode (batch statistics) on a temporary copy of the module
      return nnx.merge(graphdef, params, stats, copy=True)(a)

    return g.vat_loss(jax.random.key(2), logits_fn, inputs, xi=1e-6, eps=1.0)

  before = jax.tree.map(np.asarray, stats)
  assert np.isfinite(loss_fn(params, stats, x))
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, stats), before)
  # The clean pass of a real step updates them; the perturbed passes above did not.
  model = nnx.merge(graphdef, params, stats)
  model(x)
  assert not np.allclose(np.asarray(model.norm.mean[...]), before["norm"]["mean"][...])


def test_vat_errors():
  _, logits_fn = linear_model()
  x = jnp.ones((2, 6))
  with pytest.raises(ValueError, match="xi must be > 0"):
    g.vat_loss(jax.random.key(0), logits_fn, x, xi=0.0, eps=1.0)
  with pytest.raises(ValueError, match="finite_difference"):
    g.vat_loss(jax.random.key(0), logits_fn, x, xi=1.0, eps=1.0, finite_difference="central")
  with pytest.raises(ValueError, match=r"\[B, C\] logits"):
    g.vat_loss(jax.random.key(0), lambda a: a.sum(), x, xi=1.0, eps=1.0)

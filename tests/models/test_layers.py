"""The reshape max-pool shared by the models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gapmmd_jax.models._layers import max_pool


def _numpy_max_pool(x: np.ndarray, w: int) -> np.ndarray:
  b, h, wd, c = x.shape
  out = np.empty((b, h // w, wd // w, c), np.float64)
  for i in range(h // w):
    for j in range(wd // w):
      out[:, i, j] = x[:, i * w : (i + 1) * w, j * w : (j + 1) * w].max(axis=(1, 2))
  return out


@pytest.mark.parametrize("shape,window", [((2, 8, 8, 3), 2), ((3, 7, 9, 2), 2), ((1, 9, 9, 4), 3)])
def test_values_and_gradient_match_flax_and_numpy(shape, window):
  x = jax.random.normal(jax.random.key(0), shape)  # continuous: no ties
  np.testing.assert_allclose(
    max_pool(x, window), _numpy_max_pool(np.asarray(x, np.float64), window), rtol=0, atol=0
  )
  flax_pool = lambda a: nnx.max_pool(a, (window, window), strides=(window, window))
  np.testing.assert_array_equal(max_pool(x, window), flax_pool(x))
  weights = jax.random.normal(jax.random.key(1), max_pool(x, window).shape)
  ours = jax.grad(lambda a: jnp.sum(weights * max_pool(a, window)))(x)
  theirs = jax.grad(lambda a: jnp.sum(weights * flax_pool(a)))(x)
  np.testing.assert_array_equal(ours, theirs)
  # Exactly one entry per window receives the window's weight; dropped edges get nothing.
  assert int(jnp.sum(ours != 0)) == weights.size


def test_tied_maxima_share_the_gradient():
  x = jnp.ones((1, 2, 2, 1))
  grad = jax.grad(lambda a: jnp.sum(max_pool(a)))(x)
  np.testing.assert_allclose(grad, np.full((1, 2, 2, 1), 0.25))

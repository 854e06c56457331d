"""The layers shared by the models: the strided-slice max-pool, the convolution with fast paths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gapmmd_jax.models._layers import conv_general_dilated, max_pool
from gapmmd_jax.models._vgg import VGGBackbone


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


def test_tied_maxima_give_the_gradient_to_the_first():
  """As XLA's select-and-scatter (flax's max-pool): row-major first maximum of the window."""
  x = jnp.asarray([[1.0, 3.0, 0.0, 0.0], [3.0, 2.0, 0.0, 0.0]]).reshape(1, 2, 4, 1)
  flax_pool = lambda a: nnx.max_pool(a, (2, 2), strides=(2, 2))
  ours, theirs = (jax.grad(lambda a, p=p: jnp.sum(p(a)))(x) for p in (max_pool, flax_pool))
  np.testing.assert_array_equal(ours, theirs)
  np.testing.assert_array_equal(ours[0, :, :, 0], [[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])


def test_forward_mode_and_derivatives_of_gradients():
  """A ``custom_jvp``: ``jax.jvp`` gives the tangent at each window's maximum, as flax's pool,
  and a gradient of a gradient (VAT differentiates through its adversarial direction) is the
  closed form's."""
  x = jax.random.normal(jax.random.key(0), (2, 6, 7, 3))
  tangent = jax.random.normal(jax.random.key(1), x.shape)
  flax_pool = lambda a: nnx.max_pool(a, (2, 2), strides=(2, 2))
  (ours, ours_dot), (theirs, theirs_dot) = (
    jax.jvp(p, (x,), (tangent,)) for p in (max_pool, flax_pool)
  )
  np.testing.assert_array_equal(ours, theirs)
  np.testing.assert_array_equal(ours_dot, theirs_dot)
  # d/da sum(grad(sum sin(pool(a))) * a): cos(y) - y sin(y) at each window's maximum y, else 0.
  inner = lambda a: jnp.sum(jnp.sin(max_pool(a)))
  second = jax.jit(jax.grad(lambda a: jnp.sum(jax.grad(inner)(a) * a)))(x)
  at_maximum = jax.grad(lambda a: jnp.sum(flax_pool(a)))(x) > 0
  y = np.asarray(x, np.float64)
  expected = np.where(at_maximum, np.cos(y) - y * np.sin(y), 0.0)
  np.testing.assert_allclose(second, expected, rtol=1e-5, atol=1e-6)


def test_gradient_under_jit_after_convolution_and_batchnorm():
  """conv -> BatchNorm -> ReLU -> pool, the VGG block: the parameters' gradient under jit is
  the eager one and the one through XLA's own windowed max-pool. A pool whose gradient compares
  its input with the pooled maximum failed this (~45% error under jit, 2026-11-29): XLA
  computed the two in different fusions and they differed in the last bit."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(np.maximum(rng.normal(size=(18, 12, 12, 64)), 0.0), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 64, 128)) / 24.0, jnp.float32)
  scale, shift = jnp.ones(128), jnp.zeros(128)
  weights = jnp.asarray(rng.normal(size=(18, 6, 6, 128)), jnp.float32)
  dn = ("NHWC", "HWIO", "NHWC")
  xla_pool = lambda a: jax.lax.reduce_window(
    a, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
  )

  def loss(params, pool):
    h = jax.lax.conv_general_dilated(x, params[0], (1, 1), "SAME", dimension_numbers=dn)
    mean, var = jnp.mean(h, axis=(0, 1, 2)), jnp.var(h, axis=(0, 1, 2))
    h = (h - mean) * jax.lax.rsqrt(var + 1e-5) * params[1] + params[2]
    return jnp.sum(pool(jax.nn.relu(h)) * weights)

  params = (kernel, scale, shift)
  eager = jax.grad(loss)(params, max_pool)
  jitted = jax.jit(jax.grad(loss), static_argnums=1)(params, max_pool)
  reference = jax.jit(jax.grad(loss), static_argnums=1)(params, xla_pool)
  for ours_eager, ours_jit, theirs in zip(eager, jitted, reference):
    scale_of = float(jnp.abs(theirs).max())
    np.testing.assert_allclose(ours_jit, theirs, rtol=0, atol=1e-4 * scale_of)
    np.testing.assert_allclose(ours_eager, theirs, rtol=0, atol=1e-4 * scale_of)


@pytest.mark.parametrize(
  "image, kernel, path",
  [
    ((3, 3, 4), (5, 5, 4, 6), "gather"),  # 9 pixels, 25 taps: the pixel-to-pixel matrix
    ((2, 5, 3), (5, 3, 3, 2), "gather"),  # 10 < 15, and taps outside the kernel (masked)
    ((1, 1, 2), (3, 3, 2, 3), "gather"),
    ((3, 12, 2), (5, 3, 2, 3), "concatenate"),  # 36 pixels, 15 taps: the shifted slices
  ],
)
def test_kernels_larger_than_the_image_as_one_matmul_match_the_convolution(image, kernel, path):
  """Both matmul paths (a kernel larger than the image) give the 'SAME' convolution's values
  and gradients (float64 NumPy reference of the sum); smaller kernels take the plain path."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, *image)), jnp.float32)
  w = jnp.asarray(rng.normal(size=kernel), jnp.float32)
  dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
  ours = lambda a, b: conv_general_dilated(a, b, (1, 1), "SAME", dimension_numbers=dn)
  lax_conv = lambda a, b: jax.lax.conv_general_dilated(a, b, (1, 1), "SAME", dimension_numbers=dn)
  (k_h, k_w), (h, wd) = kernel[:2], image[:2]
  xp = np.pad(np.asarray(x, np.float64), ((0, 0), (k_h // 2,) * 2, (k_w // 2,) * 2, (0, 0)))
  reference = sum(
    xp[:, i : i + h, j : j + wd] @ np.asarray(w, np.float64)[i, j]
    for i in range(k_h)
    for j in range(k_w)
  )
  program = str(jax.make_jaxpr(ours)(x, w))
  assert path in program and "conv_general_dilated" not in program
  np.testing.assert_allclose(ours(x, w), reference, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(lax_conv(x, w), reference, rtol=1e-5, atol=1e-5)
  weights = jnp.asarray(rng.normal(size=reference.shape), jnp.float32)
  grads = [
    jax.grad(lambda a, b: jnp.sum(weights * f(a, b)), argnums=(0, 1))(x, w)
    for f in (ours, lax_conv)
  ]
  for a, b in zip(*grads):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  odd_within = lambda k, size: min(k, size) - (min(k, size) % 2 == 0)
  small = w[: odd_within(k_h, h), : odd_within(k_w, wd)]  # within the image: the plain path
  np.testing.assert_array_equal(ours(x, small), lax_conv(x, small))


def test_the_vgg_backbone_uses_a_matmul_for_5x5_on_3x3():
  """ClusterNet6c's last 5x5 convolution meets a 3x3 map: it is lowered as a matmul (3
  convolutions in the program, not 4) and the output is the plain convolution's (within
  float32 rounding)."""
  net = VGGBackbone(kernel_size=5, rngs=nnx.Rngs(0))
  x = jnp.asarray(np.random.default_rng(1).random((2, 24, 24, 1)), jnp.float32)

  def convolutions():
    graphdef, state = nnx.split(net)
    forward = lambda state, a: nnx.merge(graphdef, state)(a, train=False)
    return jax.jit(forward).lower(state, x).as_text().count("stablehlo.convolution")

  ours, ours_count = net(x, train=True), convolutions()
  for conv in net.convs:
    conv.conv_general_dilated = jax.lax.conv_general_dilated
  assert (ours_count, convolutions()) == (3, 4)
  np.testing.assert_allclose(ours, net(x, train=True), rtol=1e-4, atol=1e-4)

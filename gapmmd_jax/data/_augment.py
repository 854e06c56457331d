"""On-device image augmentation, run inside the jitted train step."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_translate(key: jax.Array, images: jax.Array, max_shift: int) -> jax.Array:
  """Shifts each image by its own random offset, filling with zeros.

  Args:
    key: PRNG key; the same key gives the same shifts.
    images: ``[B, H, W, C]`` images of any dtype.
    max_shift: largest shift in pixels along each axis (offsets uniform in
      ``[-max_shift, max_shift]``); 0 returns ``images`` unchanged.

  Returns:
    ``[B, H, W, C]`` shifted images, same dtype.
  """
  if max_shift < 0:
    raise ValueError(f"max_shift must be >= 0, got {max_shift}.")
  if images.ndim != 4:
    raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}.")
  if max_shift == 0:
    return images
  batch, height, width, channels = images.shape
  padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
  starts = jax.random.randint(key, (batch, 2), 0, 2 * max_shift + 1)

  def crop(image, start):
    return jax.lax.dynamic_slice(image, (start[0], start[1], 0), (height, width, channels))

  return jax.vmap(crop)(padded, starts)


def _affine_sample(
  image: jax.Array, matrix: jax.Array, offset: jax.Array, out_size: int
) -> jax.Array:
  """Bilinear samples of ``image [H, W, C]`` at ``matrix @ (i, j) + offset`` for an
  ``out_size``-square output grid; zero outside the image."""
  grid = jnp.stack(jnp.meshgrid(jnp.arange(out_size), jnp.arange(out_size), indexing="ij"))
  coords = jnp.einsum("ab,bhw->ahw", matrix, grid.astype(jnp.float32)) + offset[:, None, None]
  channels = [
    jax.scipy.ndimage.map_coordinates(
      image[..., c], list(coords), order=1, mode="constant", cval=0.0
    )
    for c in range(image.shape[-1])
  ]
  return jnp.stack(channels, axis=-1)


def centre_crop(images: jax.Array, size: int) -> jax.Array:
  """``[B, H, W, C]`` -> the central ``[B, size, size, C]``."""
  top, left = (images.shape[1] - size) // 2, (images.shape[2] - size) // 2
  return images[:, top : top + size, left : left + size]


def random_rotate_or_crop(
  key: jax.Array,
  images: jax.Array,
  *,
  out_size: int = 24,
  max_degrees: float = 20.0,
  crop_sizes: tuple[int, ...] = (16, 18, 20),
) -> jax.Array:
  """IIC's random transform of each image, as one bilinear resampling.

  Per image, with equal chance: the central ``out_size`` crop rotated by an
  angle uniform in ``[-max_degrees, max_degrees]`` about its centre, or a
  square crop of a side drawn from ``crop_sizes`` at a uniform position,
  resized to ``out_size``.

  Args:
    key: PRNG key; the same key gives the same transforms.
    images: ``[B, H, W, C]`` float images.

  Returns:
    ``[B, out_size, out_size, C]`` float32 images, values within the input range
    (bilinear interpolation; zeros enter only where a rotation leaves the image).
  """
  if images.ndim != 4:
    raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}.")
  batch, height, width, _ = images.shape
  if out_size > min(height, width) or max(crop_sizes) > min(height, width):
    raise ValueError(
      f"out_size={out_size} and crop_sizes={crop_sizes} must fit the {height}x{width} images."
    )
  k_choice, k_angle, k_size, k_pos = jax.random.split(key, 4)
  rotate = jax.random.bernoulli(k_choice, 0.5, (batch,))
  angle = jnp.deg2rad(
    jax.random.uniform(k_angle, (batch,), minval=-max_degrees, maxval=max_degrees)
  )
  sizes = jnp.asarray(crop_sizes, jnp.float32)[
    jax.random.randint(k_size, (batch,), 0, len(crop_sizes))
  ]
  corner = jax.random.uniform(k_pos, (batch, 2)) * (jnp.asarray([height, width]) - sizes[:, None])
  corner = jnp.floor(corner)
  centre_out = (out_size - 1) / 2.0
  centre_in = jnp.asarray([(height - 1) / 2.0, (width - 1) / 2.0])

  def one(image, rotate, angle, size, corner):
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    rotation = jnp.asarray([[cos, -sin], [sin, cos]])
    rot_offset = centre_in - rotation @ jnp.full(2, centre_out)
    scale = (size - 1) / (out_size - 1)
    matrix = jnp.where(rotate, rotation, scale * jnp.eye(2))
    offset = jnp.where(rotate, rot_offset, corner)
    return _affine_sample(image, matrix, offset, out_size)

  return jax.vmap(one)(images.astype(jnp.float32), rotate, angle, sizes, corner)


def _crop_matrix(size: jax.Array, out_size: int) -> jax.Array:
  """``[2, 2]``: output pixel steps of a ``size`` square resized to ``out_size`` (corners
  aligned, as in :func:`random_rotate_or_crop`)."""
  return (size - 1) / (out_size - 1) * jnp.eye(2)


def crop_resize(
  key: jax.Array | None, images: jax.Array, *, crop_size: int = 20, out_size: int = 24
) -> jax.Array:
  """A ``crop_size`` square of each image at a uniform position (``key``) or at the centre
  (``key=None``), resized to ``out_size``: the official IIC MNIST input ``x``.

  Args:
    key: PRNG key, or ``None`` for the centre crop (the evaluation input).
    images: ``[B, H, W, C]`` float images.

  Returns:
    ``[B, out_size, out_size, C]`` float32 images, values within the input range.
  """
  if images.ndim != 4:
    raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}.")
  batch, height, width, _ = images.shape
  if crop_size > min(height, width):
    raise ValueError(f"crop_size={crop_size} must fit the {height}x{width} images.")
  room = jnp.asarray([height - crop_size, width - crop_size], jnp.float32)
  if key is None:
    corners = jnp.broadcast_to(jnp.floor(room / 2), (batch, 2))
  else:
    corners = jnp.floor(jax.random.uniform(key, (batch, 2)) * (room + 1))
  matrix = _crop_matrix(jnp.float32(crop_size), out_size)
  return jax.vmap(lambda image, corner: _affine_sample(image, matrix, corner, out_size))(
    images.astype(jnp.float32), corners
  )


def iic_official_transform(
  key: jax.Array,
  images: jax.Array,
  *,
  out_size: int = 24,
  max_degrees: float = 25.0,
  rotate_probability: float = 0.5,
  crop_sizes: tuple[int, ...] = (16, 20, 24),
  jitter: float = 0.4,
) -> jax.Array:
  """The official IIC MNIST transform ``x'`` (Ji et al. 2019, its ``tf2``), one bilinear
  resampling per image.

  Per image: with probability ``rotate_probability`` a rotation by an angle
  uniform in ``[-max_degrees, max_degrees]`` about the image centre (zeros
  outside), then a square crop of a side drawn from ``crop_sizes`` at a uniform
  position, resized to ``out_size``; then brightness and contrast scaled by
  factors uniform in ``[1 - jitter, 1 + jitter]`` (contrast about the image's
  mean), clipped to ``[0, 1]``.

  Args:
    key: PRNG key; the same key gives the same transforms.
    images: ``[B, H, W, C]`` float images in ``[0, 1]``.

  Returns:
    ``[B, out_size, out_size, C]`` float32 images in ``[0, 1]``.
  """
  if images.ndim != 4:
    raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}.")
  batch, height, width, _ = images.shape
  if max(crop_sizes) > min(height, width):
    raise ValueError(f"crop_sizes={crop_sizes} must fit the {height}x{width} images.")
  if not 0 <= jitter < 1 or not 0 <= rotate_probability <= 1:
    raise ValueError(
      f"need 0 <= jitter < 1 and 0 <= rotate_probability <= 1, got {jitter} "
      f"and {rotate_probability}."
    )
  k_rotate, k_angle, k_size, k_pos, k_bright, k_contrast = jax.random.split(key, 6)
  rotate = jax.random.bernoulli(k_rotate, rotate_probability, (batch,))
  angle = jnp.where(
    rotate,
    jnp.deg2rad(jax.random.uniform(k_angle, (batch,), minval=-max_degrees, maxval=max_degrees)),
    0.0,
  )
  sizes = jnp.asarray(crop_sizes, jnp.float32)[
    jax.random.randint(k_size, (batch,), 0, len(crop_sizes))
  ]
  room = jnp.asarray([height, width], jnp.float32) - sizes[:, None]
  corners = jnp.floor(jax.random.uniform(k_pos, (batch, 2)) * (room + 1))
  centre = jnp.asarray([(height - 1) / 2.0, (width - 1) / 2.0])

  def one(image, angle, size, corner):
    # Output pixel g -> crop pixel corner + S g -> original pixel centre + A (. - centre).
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    rotation = jnp.asarray([[cos, -sin], [sin, cos]])
    return _affine_sample(
      image,
      rotation @ _crop_matrix(size, out_size),
      centre + rotation @ (corner - centre),
      out_size,
    )

  out = jax.vmap(one)(images.astype(jnp.float32), angle, sizes, corners)
  factors = lambda k: jax.random.uniform(k, (batch, 1, 1, 1), minval=1 - jitter, maxval=1 + jitter)
  out = jnp.clip(out * factors(k_bright), 0.0, 1.0)
  mean = jnp.mean(out, axis=(1, 2, 3), keepdims=True)
  return jnp.clip(mean + (out - mean) * factors(k_contrast), 0.0, 1.0)

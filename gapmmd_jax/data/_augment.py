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


def _affine_coords(matrix: jax.Array, offset: jax.Array, out_size: int) -> jax.Array:
  """``[2, out_size, out_size]``: ``matrix @ (i, j) + offset`` at every output pixel."""
  grid = jnp.stack(jnp.meshgrid(jnp.arange(out_size), jnp.arange(out_size), indexing="ij"))
  return jnp.einsum("ab,bhw->ahw", matrix, grid.astype(jnp.float32)) + offset[:, None, None]


def _bilinear(image: jax.Array, coords: jax.Array) -> jax.Array:
  """Bilinear samples of ``image [H, W, C]`` at ``coords [2, h, w]``; zero outside the image."""
  channels = [
    jax.scipy.ndimage.map_coordinates(
      image[..., c], list(coords), order=1, mode="constant", cval=0.0
    )
    for c in range(image.shape[-1])
  ]
  return jnp.stack(channels, axis=-1)


def _affine_sample(
  image: jax.Array, matrix: jax.Array, offset: jax.Array, out_size: int
) -> jax.Array:
  """Bilinear samples of ``image [H, W, C]`` at ``matrix @ (i, j) + offset`` for an
  ``out_size``-square output grid; zero outside the image."""
  return _bilinear(image, _affine_coords(matrix, offset, out_size))


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
  resized to ``out_size``. An approximation of the Keras book's transform, which
  :func:`keras_book_transform` makes exactly.

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


def _mirror(coords: jax.Array, size: jax.Array | float) -> jax.Array:
  """``coords`` reflected into ``[0, size - 1]`` about the edge pixels (``... c b | a b c ...``,
  SciPy's ``mirror`` mode, scikit-image's ``reflect``)."""
  period = 2 * (size - 1)
  folded = jnp.abs(coords) % period
  return jnp.where(folded > size - 1, period - folded, folded)


def _resize_coords(size: jax.Array | float, out_size: int) -> jax.Array:
  """``[2, out_size, out_size]``: where ``skimage.transform.resize`` samples a ``size``
  square for output pixel ``(i, j)``, ``(o + 1/2) size / out_size - 1/2`` per axis, mirrored."""
  axis = _mirror((jnp.arange(out_size) + 0.5) * (size / out_size) - 0.5, size)
  return jnp.stack(jnp.meshgrid(axis, axis, indexing="ij"))


def keras_book_transform(
  key: jax.Array,
  images: jax.Array,
  *,
  out_size: int = 24,
  max_degrees: int = 20,
  crop_margins: tuple[int, ...] = (8, 10, 12),
) -> jax.Array:
  """The Keras book's IIC and MINE transform ``x'``, as its data generator makes it with
  scikit-image (Atienza, *Advanced Deep Learning with Keras*, ch. 13, ``data_generator.py``).

  Per image, with equal chance:

  * the whole image rotated about its centre by an integer angle uniform in
    ``[-max_degrees, max_degrees)`` degrees, counter-clockwise as displayed
    (``skimage.transform.rotate``: bilinear, zeros outside), then resized to ``out_size``;
  * a square of side ``H - m``, ``m`` drawn from ``crop_margins``, at the offsets
    ``(m // 2, m // 2)`` with probability 1/2 and otherwise at integer offsets uniform in
    ``[0, m]``, resized to ``out_size``.

  Resizing is ``skimage.transform.resize``'s bilinear one: output pixel ``o`` samples
  ``(o + 1/2) side / out_size - 1/2`` along each axis, mirrored at the edges; its
  anti-aliasing filter is the identity while the shrink factor stays under 1.25, the only
  case accepted. :func:`random_rotate_or_crop` is this project's earlier approximation
  (rotating the centre crop, crops always at a random position).

  Args:
    key: PRNG key; the same key gives the same transforms.
    images: ``[B, H, H, C]`` float images.

  Returns:
    ``[B, out_size, out_size, C]`` float32 images; bilinear, so values stay within the
    input's range and 0.
  """
  if images.ndim != 4 or images.shape[1] != images.shape[2]:
    raise ValueError(f"images must be square [B, H, H, C], got shape {images.shape}.")
  batch, size = images.shape[0], images.shape[1]
  if not size < 1.25 * out_size:
    raise ValueError(
      f"out_size={out_size} shrinks the {size}x{size} images by 1.25 or more, where "
      "scikit-image would blur them first; not supported."
    )
  if max_degrees < 1 or not crop_margins or any(not 0 <= m <= size - 2 for m in crop_margins):
    raise ValueError(
      f"need max_degrees >= 1 and crop margins in [0, {size - 2}], got {max_degrees} and "
      f"{crop_margins}."
    )
  k_rotate, k_angle, k_margin, k_centred, k_offset = jax.random.split(key, 5)
  rotate = jax.random.bernoulli(k_rotate, 0.5, (batch,))
  degrees = jax.random.randint(k_angle, (batch,), -max_degrees, max_degrees)
  margins = jnp.asarray(crop_margins, jnp.float32)[
    jax.random.randint(k_margin, (batch,), 0, len(crop_margins))
  ]
  centred = jax.random.bernoulli(k_centred, 0.5, (batch, 1))
  uniform = jnp.floor(jax.random.uniform(k_offset, (batch, 2)) * (margins[:, None] + 1))
  offsets = jnp.where(centred, jnp.floor(margins / 2)[:, None], uniform)
  centre = jnp.full(2, (size - 1) / 2.0)

  def one(image, rotate, degrees, margin, offset):
    cos, sin = jnp.cos(jnp.deg2rad(degrees)), jnp.sin(jnp.deg2rad(degrees))
    turn = jnp.asarray([[cos, sin], [-sin, cos]])  # (row, col) of the output -> of the input
    turned = _affine_sample(image, turn, centre - turn @ centre, size)
    rotated = _bilinear(turned, _resize_coords(float(size), out_size))
    side = size - margin
    cropped = _bilinear(image, _resize_coords(side, out_size) + offset[:, None, None])
    return jnp.where(rotate, rotated, cropped)

  return jax.vmap(one)(images.astype(jnp.float32), rotate, degrees, margins, offsets)


def _crop_matrix(size: jax.Array, out_size: int) -> jax.Array:
  """``[2, 2]``: output pixel steps of a ``size`` square resized to ``out_size`` (corners
  aligned, as in :func:`random_rotate_or_crop`)."""
  return (size - 1) / (out_size - 1) * jnp.eye(2)


def crop_resize(
  key: jax.Array | None,
  images: jax.Array,
  *,
  crop_size: int = 20,
  out_size: int = 24,
  centre_probability: float = 0.0,
) -> jax.Array:
  """A ``crop_size`` square of each image at a uniform position (``key``) or at the centre
  (``key=None``), resized to ``out_size``: the official IIC MNIST input ``x``.

  With ``key``, each image's crop is the centre one with probability
  ``centre_probability`` (the official ``centre_half``: 0.5), else at a uniform
  position; at 0 the key draws only the positions.

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
  if not 0 <= centre_probability <= 1:
    raise ValueError(f"centre_probability must be in [0, 1], got {centre_probability}.")
  room = jnp.asarray([height - crop_size, width - crop_size], jnp.float32)
  centre = jnp.broadcast_to(jnp.floor(room / 2), (batch, 2))
  if key is None:
    corners = centre
  elif centre_probability == 0:
    corners = jnp.floor(jax.random.uniform(key, (batch, 2)) * (room + 1))
  else:
    position_key, centre_key = jax.random.split(key)
    uniform = jnp.floor(jax.random.uniform(position_key, (batch, 2)) * (room + 1))
    at_centre = jax.random.bernoulli(centre_key, centre_probability, (batch, 1))
    corners = jnp.where(at_centre, centre, uniform)
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

"""On-device image augmentation, run inside the jitted train step."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


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


def _crop_corners(
  key: jax.Array | None,
  batch: int,
  room: jax.Array,
  centre: jax.Array,
  centre_probability: float,
) -> jax.Array:
  """``[batch, 2]`` float top-left corners of square crops: ``centre`` (``key=None``, or with
  probability ``centre_probability``), else uniform over ``0 .. room`` per axis."""
  centre = jnp.broadcast_to(centre, (batch, 2))
  if key is None:
    return centre
  if centre_probability == 0:
    return jnp.floor(jax.random.uniform(key, (batch, 2)) * (room + 1))
  position_key, centre_key = jax.random.split(key)
  uniform = jnp.floor(jax.random.uniform(position_key, (batch, 2)) * (room + 1))
  at_centre = jax.random.bernoulli(centre_key, centre_probability, (batch, 1))
  return jnp.where(at_centre, centre, uniform)


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
  corners = _crop_corners(key, batch, room, jnp.floor(room / 2), centre_probability)
  matrix = _crop_matrix(jnp.float32(crop_size), out_size)
  return jax.vmap(lambda image, corner: _affine_sample(image, matrix, corner, out_size))(
    images.astype(jnp.float32), corners
  )


def _check_iic_transform(
  shape: tuple[int, ...], crop_sizes: tuple[int, ...], jitter: float, rotate_probability: float
) -> None:
  """The arguments of the official IIC transforms, for ``[B, H, W, C]`` images of ``shape``."""
  height, width = shape[1], shape[2]
  if max(crop_sizes) > min(height, width):
    raise ValueError(f"crop_sizes={crop_sizes} must fit the {height}x{width} images.")
  if not 0 <= jitter < 1 or not 0 <= rotate_probability <= 1:
    raise ValueError(
      f"need 0 <= jitter < 1 and 0 <= rotate_probability <= 1, got {jitter} "
      f"and {rotate_probability}."
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
  _check_iic_transform(images.shape, crop_sizes, jitter, rotate_probability)
  batch, height, width, _ = images.shape
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


# The official IIC code's transforms step by step, as torchvision 0.2 and Pillow compute
# them on 8-bit images: a nearest-neighbour rotation, a crop, a bilinear resize with
# half-pixel centres in two passes of Pillow's fixed-point arithmetic, and a brightness /
# contrast jitter in random order whose float blends truncate to 8 bits.

_PIL_PRECISION_BITS = 22  # Pillow's resampling: coefficients and sums in 1 / 2^22


def _check_uint8_images(images: jax.Array) -> None:
  if images.ndim != 4 or images.dtype != jnp.uint8:
    raise ValueError(
      f"images must be uint8 [B, H, W, C] (what Pillow sees), got {images.dtype} {images.shape}."
    )


def _pil_coefficients(sizes: tuple[int, ...], out: int) -> np.ndarray:
  """``[len(sizes), out, max(sizes)]`` int32: per crop side, Pillow's fixed-point bilinear
  coefficients for enlarging it to ``out`` (``precompute_coeffs`` and
  ``normalize_coeffs_8bpc`` of its ``Resample.c``, support 1): output pixel ``o`` weighs
  input pixel ``k`` by ``max(0, 1 - |k + 1/2 - (o + 1/2) size / out|)``, normalised over
  the crop, then rounded to ``2^-22``. A side equal to ``out`` gives the identity."""
  table = np.zeros((len(sizes), out, max(sizes)), np.int64)
  for n, size in enumerate(sizes):
    if size > out:
      raise ValueError(f"crop sides must not exceed out_size={out} (Pillow enlarges), got {size}.")
    centre = (np.arange(out) + 0.5) * (size / out)
    weights = np.maximum(0.0, 1.0 - np.abs(np.arange(size)[None, :] + 0.5 - centre[:, None]))
    weights /= weights.sum(axis=1, keepdims=True)
    table[n, :, :size] = np.trunc(0.5 + weights * (1 << _PIL_PRECISION_BITS))
  return table.astype(np.int32)


def _pil_crop_resize_one(
  image: jax.Array, corner: jax.Array, which: jax.Array | int, table: np.ndarray
) -> jax.Array:
  """One ``[H, W, C]`` int32 image: the square crop of side ``sizes[which]`` (``table`` from
  :func:`_pil_coefficients`) at ``corner`` (row, column) resized, horizontally then
  vertically, each pass summed and rounded in Pillow's fixed point; int32 8-bit values."""
  coefficients = jnp.asarray(table)[which]  # [out, max side], zero beyond this side

  def on_axis(start, length):  # [out, length]: the coefficients placed at the crop
    k = jnp.arange(length) - start
    inside = (k >= 0) & (k < table.shape[2])
    return jnp.where(inside[None, :], coefficients[:, jnp.clip(k, 0, table.shape[2] - 1)], 0)

  def round8(sums):  # Pillow's clip8 after adding half a unit
    return jnp.clip((sums + (1 << (_PIL_PRECISION_BITS - 1))) >> _PIL_PRECISION_BITS, 0, 255)

  wide = round8(jnp.einsum("hwc,ow->hoc", image, on_axis(corner[1], image.shape[1])))
  return round8(jnp.einsum("hoc,ph->poc", wide, on_axis(corner[0], image.shape[0])))


def pil_crop_resize(
  key: jax.Array | None,
  images: jax.Array,
  *,
  crop_size: int = 20,
  out_size: int = 24,
  centre_probability: float = 0.0,
) -> jax.Array:
  """The official IIC MNIST ``x`` as torchvision computes it (``tf1``, and ``tf3`` for
  evaluation): a ``crop_size`` square at a uniform position, or at the centre with
  probability ``centre_probability`` (``key=None``: always), resized to ``out_size`` by
  Pillow's bilinear filter (half-pixel centres, two fixed-point passes).

  Args:
    key: PRNG key, or ``None`` for the centre crop.
    images: ``[B, H, W, C]`` uint8.

  Returns:
    ``[B, out_size, out_size, C]`` float32 in ``[0, 1]``, multiples of 1/255.
  """
  _check_uint8_images(images)
  batch, height, width, _ = images.shape
  if crop_size > min(height, width):
    raise ValueError(f"crop_size={crop_size} must fit the {height}x{width} images.")
  if not 0 <= centre_probability <= 1:
    raise ValueError(f"centre_probability must be in [0, 1], got {centre_probability}.")
  table = _pil_coefficients((crop_size,), out_size)
  room = jnp.asarray([height - crop_size, width - crop_size], jnp.float32)
  # torchvision's CenterCrop: int(round((H - crop) / 2.)), under Python 2 halves round up.
  corners = _crop_corners(key, batch, room, jnp.floor((room + 1) / 2), centre_probability)
  corners = corners.astype(jnp.int32)
  resize = lambda image, corner: _pil_crop_resize_one(image, corner, 0, table)
  return jax.vmap(resize)(images.astype(jnp.int32), corners).astype(jnp.float32) / 255.0


def _pil_rotate_nearest(image: jax.Array, degrees: jax.Array) -> jax.Array:
  """``Image.rotate(degrees)`` of an ``[H, W, C]`` image, nearest neighbour, about the image's
  centre ``(W / 2, H / 2)``, zeros outside, in Pillow's 16.16 fixed point (``affine_fixed``
  of its ``Geometry.c``): output pixel ``(x, y)`` takes input pixel ``floor(A (x + 1/2,
  y + 1/2) + t)``, ``A`` the rotation by ``-degrees`` and ``t`` keeping the centre."""
  height, width, _ = image.shape
  angle = -jnp.deg2rad(degrees)
  a0, a1, a3, a4 = jnp.cos(angle), jnp.sin(angle), -jnp.sin(angle), jnp.cos(angle)
  cx, cy = width / 2.0, height / 2.0
  a2, a5 = cx - a0 * cx - a1 * cy, cy - a3 * cx - a4 * cy
  fix = lambda v: jnp.floor(v * 65536.0 + 0.5).astype(jnp.int32)
  y, x = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
  src_x = fix(a2 + (a0 + a1) * 0.5) + x * fix(a0) + y * fix(a1)
  src_y = fix(a5 + (a3 + a4) * 0.5) + x * fix(a3) + y * fix(a4)
  col, row = src_x >> 16, src_y >> 16
  inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
  taken = image[jnp.clip(row, 0, height - 1), jnp.clip(col, 0, width - 1)]
  return jnp.where(inside[..., None], taken, jnp.zeros((), image.dtype))


def _torchvision_one(
  image: jax.Array,
  rotate: jax.Array,
  degrees: jax.Array,
  which: jax.Array,
  corner: jax.Array,
  brightness: jax.Array,
  contrast: jax.Array,
  brightness_first: jax.Array,
  *,
  table: np.ndarray,
) -> jax.Array:
  """:func:`iic_torchvision_transform` of one ``[H, W, 1]`` int32 image with its draws given:
  rotated by ``degrees`` if ``rotate``, the crop of side ``which`` (an index into ``table``)
  at ``corner`` (row, column) resized, then the two jitter blends (float32, as Pillow's
  ``ImagingBlend``); ``[out, out, 1]`` float32 8-bit values."""
  image = jnp.where(rotate, _pil_rotate_nearest(image, degrees), image)
  image = _pil_crop_resize_one(image, corner, which, table).astype(jnp.float32)
  truncate8 = lambda v: jnp.clip(jnp.floor(v), 0.0, 255.0)  # (UINT8) of the float blend
  bright = lambda v: truncate8(brightness * v)
  mean = lambda v: jnp.floor(jnp.mean(v) + 0.5)  # int(ImageStat mean + 0.5)
  contrasted = lambda v: truncate8(mean(v) + contrast * (v - mean(v)))
  return jnp.where(brightness_first, contrasted(bright(image)), bright(contrasted(image)))


def iic_torchvision_transform(
  key: jax.Array,
  images: jax.Array,
  *,
  out_size: int = 24,
  max_degrees: float = 25.0,
  rotate_probability: float = 0.5,
  crop_sizes: tuple[int, ...] = (16, 20, 24),
  jitter: float = 0.4,
) -> jax.Array:
  """The official IIC MNIST ``x'`` (``tf2``) as torchvision 0.2 and Pillow compute it.

  Per image: with probability ``rotate_probability`` ``RandomRotation(max_degrees)``
  (nearest neighbour, zeros outside); a ``RandomCrop`` of a side drawn from
  ``crop_sizes``; ``Resize(out_size)`` (Pillow's bilinear filter, half-pixel centres,
  two fixed-point passes); ``ColorJitter``'s brightness and contrast, each factor uniform
  in ``[1 - jitter, 1 + jitter]``, in random order, each blend truncated to 8 bits
  (contrast about the image's mean rounded to an integer; the jitter's saturation and
  hue leave a grey-scale image as it is). :func:`iic_official_transform` draws the same
  distribution as one bilinear resampling, corners aligned, without the rounding.

  Args:
    key: PRNG key; the same key gives the same transforms.
    images: ``[B, H, W, 1]`` uint8.

  Returns:
    ``[B, out_size, out_size, 1]`` float32 in ``[0, 1]``, multiples of 1/255.
  """
  _check_uint8_images(images)
  batch, height, width, channels = images.shape
  if channels != 1:
    raise ValueError(f"images must be grey-scale (one channel), got {channels}.")
  _check_iic_transform(images.shape, crop_sizes, jitter, rotate_probability)
  table = _pil_coefficients(crop_sizes, out_size)
  keys = jax.random.split(key, 7)
  rotate = jax.random.bernoulli(keys[0], rotate_probability, (batch,))
  degrees = jax.random.uniform(keys[1], (batch,), minval=-max_degrees, maxval=max_degrees)
  which = jax.random.randint(keys[2], (batch,), 0, len(crop_sizes))
  room = jnp.asarray([height, width], jnp.int32) - jnp.asarray(crop_sizes, jnp.int32)[which, None]
  corners = jax.random.randint(keys[3], (batch, 2), 0, room + 1)
  factor = lambda k: jax.random.uniform(k, (batch,), minval=1 - jitter, maxval=1 + jitter)
  brightness, contrast = factor(keys[4]), factor(keys[5])
  brightness_first = jax.random.bernoulli(keys[6], 0.5, (batch,))
  one = functools.partial(_torchvision_one, table=table)
  out = jax.vmap(one)(
    images.astype(jnp.int32),
    rotate,
    degrees,
    which,
    corners,
    brightness,
    contrast,
    brightness_first,
  )
  return out / 255.0

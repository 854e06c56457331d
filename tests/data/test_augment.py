"""On-device augmentation: exact shifts, determinism, ranges, the Keras book's transform
against its own scikit-image calls, the official IIC transform against Pillow's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance
from skimage import transform as skimage_transform

from gapmmd_jax.data import (
  _augment,
  centre_crop,
  crop_resize,
  iic_official_transform,
  iic_torchvision_transform,
  keras_book_transform,
  pil_crop_resize,
  random_rotate_or_crop,
  random_translate,
)


def _shift_reference(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """``image`` moved down by ``dy`` and right by ``dx`` pixels, zero-filled."""
  out = np.zeros_like(image)
  h, w = image.shape[:2]
  out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
    max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
  ]
  return out


def test_each_image_is_a_zero_filled_shift_within_range():
  images = np.random.default_rng(0).integers(1, 256, (16, 9, 7, 2)).astype(np.uint8)
  shifted = np.asarray(random_translate(jax.random.key(3), images, 2))
  assert shifted.dtype == np.uint8 and shifted.shape == images.shape
  seen = set()
  for image, out in zip(images, shifted):
    matches = [
      (dy, dx)
      for dy in range(-2, 3)
      for dx in range(-2, 3)
      if np.array_equal(out, _shift_reference(image, dy, dx))
    ]
    assert len(matches) == 1
    seen.add(matches[0])
  assert len(seen) > 1  # offsets differ between images


def test_deterministic_per_key_and_identity_at_zero():
  images = np.random.default_rng(1).random((8, 6, 6, 1)).astype(np.float32)
  a = random_translate(jax.random.key(0), images, 1)
  np.testing.assert_array_equal(a, random_translate(jax.random.key(0), images, 1))
  assert not np.array_equal(a, random_translate(jax.random.key(1), images, 1))
  np.testing.assert_array_equal(random_translate(jax.random.key(0), images, 0), images)


def test_bad_arguments():
  with pytest.raises(ValueError, match="max_shift"):
    random_translate(jax.random.key(0), np.zeros((1, 4, 4, 1)), -1)
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    random_translate(jax.random.key(0), np.zeros((4, 4, 1)), 1)


def _is_a_24_crop(out: np.ndarray, image: np.ndarray) -> bool:
  """Whether ``out`` is one of the 25 crops of side 24 of a 28 x 28 ``image``."""
  return any(
    np.allclose(out, image[i : i + 24, j : j + 24], atol=1e-4) for i in range(5) for j in range(5)
  )


@pytest.mark.parametrize(
  "transform, jitters", [(random_rotate_or_crop, False), (iic_official_transform, True)]
)
def test_random_transforms_are_deterministic_and_stay_in_range(transform, jitters):
  images = np.random.default_rng(2).random((16, 28, 28, 1)).astype(np.float32)
  a = np.asarray(transform(jax.random.key(0), images))
  assert a.shape == (16, 24, 24, 1) and a.dtype == np.float32
  np.testing.assert_array_equal(a, transform(jax.random.key(0), images))
  assert not np.array_equal(a, transform(jax.random.key(1), images))
  # Bilinear resampling makes no new extremes; the brightness jitter is clipped to [0, 1].
  assert a.min() >= 0.0 and a.max() <= (1.0 if jitters else images.max() + 1e-6)


def test_rotate_or_crop_geometry():
  """A 0-degree rotation is the centre crop; a full-size crop is a resize of the whole."""
  image = np.random.default_rng(3).random((1, 28, 28, 1)).astype(np.float32)
  no_rotation = random_rotate_or_crop(
    jax.random.key(0), np.repeat(image, 64, 0), max_degrees=1e-6, crop_sizes=(24,)
  )
  centre = np.asarray(centre_crop(image, 24))[0]
  for out in np.asarray(no_rotation):  # each is a rotation by ~0 or a 24-pixel crop
    assert _is_a_24_crop(out, image[0])
  assert any(np.allclose(out, centre, atol=1e-4) for out in np.asarray(no_rotation))


def test_centre_crop():
  images = np.arange(2 * 6 * 6).reshape(2, 6, 6, 1)
  np.testing.assert_array_equal(centre_crop(images, 2), images[:, 2:4, 2:4])


def test_crop_resize_centre_and_random():
  """The centre crop at full output size is the plain centre crop; random crops are crops."""
  images = np.random.default_rng(4).random((8, 28, 28, 1)).astype(np.float32)
  np.testing.assert_allclose(
    crop_resize(None, images, crop_size=24, out_size=24), centre_crop(images, 24), atol=1e-6
  )
  centre = np.asarray(crop_resize(None, images))
  assert centre.shape == (8, 24, 24, 1)
  np.testing.assert_array_equal(centre, crop_resize(None, images))  # evaluation: deterministic
  random = np.asarray(crop_resize(jax.random.key(0), images, crop_size=24, out_size=24))
  assert all(_is_a_24_crop(out, image) for out, image in zip(random, images))
  with pytest.raises(ValueError, match="must fit"):
    crop_resize(None, images, crop_size=30)


def test_crop_resize_centre_half_of_the_time():
  """The official ``centre_half``: with probability p the centre crop, else a uniform one; at
  p = 0 the same crops as before the option existed (the key draws only the positions).
  A uniform crop is the centre one with probability 1/81 (9 x 9 positions), so the share
  of centre crops among 4000 is 0.5 + 0.5 / 81 ~ 0.506, std ~ 0.0079: within 0.04 at a
  false-alarm rate under 1e-6 (5 std)."""
  images = np.random.default_rng(6).random((4000, 28, 28, 1)).astype(np.float32)
  key = jax.random.key(3)
  centre = np.asarray(crop_resize(None, images))
  np.testing.assert_array_equal(crop_resize(key, images, centre_probability=1.0), centre)
  uniform = np.asarray(crop_resize(key, images))
  np.testing.assert_array_equal(crop_resize(key, images, centre_probability=0.0), uniform)
  half = np.asarray(crop_resize(key, images, centre_probability=0.5))
  at_centre = np.all(half == centre, axis=(1, 2, 3))
  assert abs(at_centre.mean() - (0.5 + 0.5 / 81)) < 0.04
  # Elsewhere the crop at a uniform position (drawn with the key's first half).
  positions = np.asarray(crop_resize(jax.random.split(key)[0], images))
  np.testing.assert_array_equal(half[~at_centre], positions[~at_centre])
  with pytest.raises(ValueError, match="centre_probability"):
    crop_resize(key, images[:2], centre_probability=1.5)


def test_official_iic_transform_without_rotation_and_jitter_is_a_crop():
  images = np.random.default_rng(5).random((32, 28, 28, 1)).astype(np.float32)
  plain = np.asarray(
    iic_official_transform(
      jax.random.key(2), images, rotate_probability=0.0, crop_sizes=(24,), jitter=0.0
    )
  )
  assert all(_is_a_24_crop(out, image) for out, image in zip(plain, images))
  # Rotated by ~0 degrees: the same crops.
  tiny = np.asarray(
    iic_official_transform(
      jax.random.key(2),
      images,
      rotate_probability=1.0,
      max_degrees=1e-6,
      crop_sizes=(24,),
      jitter=0.0,
    )
  )
  np.testing.assert_allclose(tiny, plain, atol=1e-4)
  with pytest.raises(ValueError, match="jitter"):
    iic_official_transform(jax.random.key(0), images, jitter=1.5)


def _keras_book_candidates(image: np.ndarray, max_degrees: int = 20) -> dict[tuple, np.ndarray]:
  """Every output the Keras book's generator can make from one ``[28, 28, 1]`` image, by its
  own calls to scikit-image, keyed by ``("rotate", degrees)`` or ``("crop", margin, dy, dx)``."""
  image = image.astype(np.float64)
  out = {
    ("rotate", angle): skimage_transform.resize(skimage_transform.rotate(image, angle), (24, 24, 1))
    for angle in range(-max_degrees, max_degrees)
  }
  for margin in (8, 10, 12):
    side = 28 - margin
    for dy in range(margin + 1):
      for dx in range(margin + 1):
        crop = image[dy : dy + side, dx : dx + side]
        out[("crop", margin, dy, dx)] = skimage_transform.resize(crop, (24, 24, 1))
  return out


def _matched_candidates(images: np.ndarray, outputs: np.ndarray, max_degrees: int) -> list:
  """The one scikit-image candidate each output equals (float tolerance)."""
  kinds = []
  for image, out in zip(images, outputs):
    matches = [
      name
      for name, reference in _keras_book_candidates(image, max_degrees).items()
      if np.allclose(out, reference, atol=2e-5)
    ]
    assert len(matches) == 1, matches
    kinds.append(matches[0])
  return kinds


def test_keras_book_transform_is_the_books_scikit_image_pipeline():
  """Each output is one of the book's scikit-image outputs (float64), and the draws cover
  rotations, centred crops and uncentred crops in about the book's proportions."""
  rng = np.random.default_rng(6)
  images = rng.random((48, 28, 28, 1)).astype(np.float32)
  outputs = np.asarray(keras_book_transform(jax.random.key(0), images))
  assert outputs.shape == (48, 24, 24, 1) and outputs.dtype == np.float32
  kinds = _matched_candidates(images, outputs, 20)
  rotations = [k for k in kinds if k[0] == "rotate"]
  centred = [k for k in kinds if k[0] == "crop" and k[2] == k[3] == k[1] // 2]
  assert 12 <= len(rotations) <= 36  # P = 0.999 for Binomial(48, 1/2)
  assert len(centred) >= 3 and len(kinds) - len(rotations) - len(centred) >= 3
  assert len(set(rotations)) > 5
  # Angles in [-1, 1) tell the rotation's direction (the wider range is symmetric but for -20).
  one_degree = keras_book_transform(jax.random.key(1), images[:16], max_degrees=1)
  assert ("rotate", -1) in _matched_candidates(images[:16], np.asarray(one_degree), 1)


def test_keras_book_transform_determinism_and_bad_input():
  images = np.random.default_rng(7).random((8, 28, 28, 1)).astype(np.float32)
  a = np.asarray(keras_book_transform(jax.random.key(0), images))
  np.testing.assert_array_equal(a, keras_book_transform(jax.random.key(0), images))
  assert not np.array_equal(a, keras_book_transform(jax.random.key(1), images))
  assert a.min() >= 0.0 and a.max() <= images.max() + 1e-6
  with pytest.raises(ValueError, match="square"):
    keras_book_transform(jax.random.key(0), images[:, :, :27])
  with pytest.raises(ValueError, match=r"1\.25"):
    keras_book_transform(jax.random.key(0), images, out_size=20)
  with pytest.raises(ValueError, match="crop margins"):
    keras_book_transform(jax.random.key(0), images, crop_margins=(27,))


def _pillow_tf2(image, rotate, degrees, size, corner, brightness, contrast, brightness_first):
  """The official IIC ``tf2`` with its draws given, through Pillow as torchvision 0.2 calls
  it: ``rotate`` (resample=False: nearest), ``crop``, ``resize`` (bilinear) and the
  jitter's ``ImageEnhance`` brightness and contrast in the drawn order."""
  picture = Image.fromarray(image)
  if rotate:
    picture = picture.rotate(degrees, Image.NEAREST)
  top, left = corner
  picture = picture.crop((left, top, left + size, top + size)).resize((24, 24), Image.BILINEAR)
  jitters = [
    lambda p: ImageEnhance.Brightness(p).enhance(brightness),
    lambda p: ImageEnhance.Contrast(p).enhance(contrast),
  ]
  for jitter in jitters if brightness_first else jitters[::-1]:
    picture = jitter(picture)
  return np.asarray(picture)


def test_torchvision_transform_is_pillows_pipeline_pixel_for_pixel():
  """Given the same draws, every output pixel equals Pillow's (40 draws on random 8-bit
  images: nearest rotation in 16.16 fixed point, fixed-point two-pass resize, truncating
  blends); the evaluation input equals CenterCrop(20) then Resize(24)."""
  rng = np.random.default_rng(0)
  sizes = (16, 20, 24)
  table = _augment._pil_coefficients(sizes, 24)
  one = jax.jit(lambda *draws: _augment._torchvision_one(*draws, table=table))
  images = rng.integers(0, 256, (40, 28, 28)).astype(np.uint8)
  for t, image in enumerate(images):
    which = t % 3
    corner = rng.integers(0, 28 - sizes[which] + 1, 2)
    rotate, brightness_first = t % 2 == 0, t % 4 < 2
    degrees, brightness, contrast = (float(np.float32(v)) for v in rng.uniform(-1, 1, 3))
    degrees, brightness, contrast = 25 * degrees, 1 + 0.4 * brightness, 1 + 0.4 * contrast
    draws = (rotate, degrees, sizes[which], corner, brightness, contrast, brightness_first)
    ours = one(
      jnp.asarray(image[..., None], jnp.int32),
      rotate,
      jnp.float32(degrees),
      which,
      jnp.asarray(corner, jnp.int32),
      jnp.float32(brightness),
      jnp.float32(contrast),
      brightness_first,
    )
    np.testing.assert_array_equal(np.asarray(ours)[..., 0], _pillow_tf2(image, *draws), str(draws))
  crop_resize_20 = lambda i: (
    Image.fromarray(i).crop((4, 4, 24, 24)).resize((24, 24), Image.BILINEAR)
  )
  centre = np.stack([crop_resize_20(image) for image in images])
  evaluation = np.asarray(pil_crop_resize(None, images[..., None]))[..., 0]
  np.testing.assert_array_equal(np.rint(evaluation * 255), centre)


def test_torchvision_transforms_determinism_range_and_bad_input():
  images = np.random.default_rng(1).integers(0, 256, (12, 28, 28, 1)).astype(np.uint8)
  for transform in (iic_torchvision_transform, pil_crop_resize):
    a = np.asarray(transform(jax.random.key(0), images))
    assert a.shape == (12, 24, 24, 1) and a.dtype == np.float32
    np.testing.assert_array_equal(a, transform(jax.random.key(0), images))
    assert not np.array_equal(a, transform(jax.random.key(1), images))
    assert a.min() >= 0 and a.max() <= 1
    np.testing.assert_allclose(a * 255, np.rint(a * 255), atol=1e-4)  # 8-bit levels
    with pytest.raises(ValueError, match="uint8"):
      transform(jax.random.key(0), images.astype(np.float32))
  # x: the centre crop with probability 1, the evaluation input.
  always = pil_crop_resize(jax.random.key(2), images, centre_probability=1.0)
  np.testing.assert_array_equal(always, pil_crop_resize(None, images))
  with pytest.raises(ValueError, match="grey-scale"):
    iic_torchvision_transform(jax.random.key(0), np.zeros((2, 28, 28, 3), np.uint8))
  with pytest.raises(ValueError, match="must fit"):
    iic_torchvision_transform(jax.random.key(0), images[:, :20, :20])
  with pytest.raises(ValueError, match="exceed out_size"):
    iic_torchvision_transform(jax.random.key(0), images, crop_sizes=(26,))

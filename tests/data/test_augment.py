"""On-device random translation: exact shifts, determinism, no new values."""

import jax
import numpy as np
import pytest

from gapmmd_jax.data import centre_crop, random_rotate_or_crop, random_translate


def _shift_reference(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """``image`` moved down by ``dy`` and right by ``dx`` pixels, zero-filled."""
  out = np.zeros_like(image)
  h, w = image.shape[:2]
  out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
      image[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
  return out


def test_each_image_is_a_zero_filled_shift_within_range():
  images = np.random.default_rng(0).integers(1, 256, (16, 9, 7, 2)).astype(np.uint8)
  shifted = np.asarray(random_translate(jax.random.key(3), images, 2))
  assert shifted.dtype == np.uint8 and shifted.shape == images.shape
  seen = set()
  for image, out in zip(images, shifted):
    matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
               if np.array_equal(out, _shift_reference(image, dy, dx))]
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


def test_rotate_or_crop_is_deterministic_and_stays_in_range():
  images = np.random.default_rng(2).random((16, 28, 28, 1)).astype(np.float32)
  a = np.asarray(random_rotate_or_crop(jax.random.key(0), images))
  assert a.shape == (16, 24, 24, 1) and a.dtype == np.float32
  np.testing.assert_array_equal(a, random_rotate_or_crop(jax.random.key(0), images))
  assert not np.array_equal(a, random_rotate_or_crop(jax.random.key(1), images))
  assert a.min() >= 0.0 and a.max() <= images.max() + 1e-6  # bilinear: no new extremes


def test_rotate_or_crop_geometry():
  """A 0-degree rotation is the centre crop; a full-size crop is a resize of the whole."""
  image = np.random.default_rng(3).random((1, 28, 28, 1)).astype(np.float32)
  no_rotation = random_rotate_or_crop(jax.random.key(0), np.repeat(image, 64, 0),
                                      max_degrees=1e-6, crop_sizes=(24,))
  centre = np.asarray(centre_crop(image, 24))[0]
  for out in np.asarray(no_rotation):  # each is a rotation by ~0 or a 24-pixel crop
    crops = [image[0, i:i + 24, j:j + 24] for i in range(5) for j in range(5)]
    assert any(np.allclose(out, c, atol=1e-4) for c in crops)
  assert any(np.allclose(out, centre, atol=1e-4) for out in np.asarray(no_rotation))


def test_centre_crop():
  images = np.arange(2 * 6 * 6).reshape(2, 6, 6, 1)
  np.testing.assert_array_equal(centre_crop(images, 2), images[:, 2:4, 2:4])

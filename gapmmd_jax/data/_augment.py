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

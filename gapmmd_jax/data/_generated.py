"""Datasets generated from MNIST, deterministic from a seed and cached.

Both generators are pure NumPy functions of their inputs and a seed; the
``load_*`` wrappers cache the result as ``.npz`` under the user cache (never
inside the repository).
"""

from __future__ import annotations

import hashlib
import os
import pathlib

import numpy as np

from gapmmd_jax.data._mnist import cache_dir, load_mnist

BSDS_DIR_ENV = "GAPMMD_BSDS_DIR"


def cluttered_mnist(
  images: np.ndarray,
  *,
  seed: int,
  canvas_size: int = 60,
  num_clutter: int = 4,
  clutter_size: int = 8,
) -> np.ndarray:
  """Places each digit at a random position on a larger canvas with clutter.

  Clutter: ``num_clutter`` patches of ``clutter_size`` pixels squared, cut at
  random from other random digits and pasted at random positions (pixel-wise
  maximum), drawn before the digit itself.

  Args:
    images: ``[N, 28, 28]`` uint8 digits.
    seed: seed of every random choice.
    canvas_size: side of the square output.
    num_clutter: clutter patches per image.
    clutter_size: side of each patch.

  Returns:
    ``[N, canvas_size, canvas_size]`` uint8.
  """
  images = np.asarray(images)
  if images.ndim != 3 or images.dtype != np.uint8:
    raise ValueError(f"images must be [N, H, W] uint8, got {images.shape} {images.dtype}.")
  n, h, w = images.shape
  if canvas_size < max(h, w) or not 0 < clutter_size <= min(h, w):
    raise ValueError(
      f"canvas_size={canvas_size} must be >= {max(h, w)} and clutter_size="
      f"{clutter_size} in [1, {min(h, w)}]."
    )
  rng = np.random.default_rng(seed)
  canvas = np.zeros((n, canvas_size, canvas_size), np.uint8)
  rows = np.arange(n)[:, None, None]
  grid_r = np.arange(clutter_size)[None, :, None]
  grid_c = np.arange(clutter_size)[None, None, :]
  for _ in range(num_clutter):
    source = rng.integers(0, n, size=(n,))
    src_r = rng.integers(0, h - clutter_size + 1, size=(n,))[:, None, None]
    src_c = rng.integers(0, w - clutter_size + 1, size=(n,))[:, None, None]
    dst_r = rng.integers(0, canvas_size - clutter_size + 1, size=(n,))[:, None, None]
    dst_c = rng.integers(0, canvas_size - clutter_size + 1, size=(n,))[:, None, None]
    patch = images[source[:, None, None], src_r + grid_r, src_c + grid_c]
    region = (rows, dst_r + grid_r, dst_c + grid_c)
    canvas[region] = np.maximum(canvas[region], patch)
  dst_r = rng.integers(0, canvas_size - h + 1, size=(n,))[:, None, None]
  dst_c = rng.integers(0, canvas_size - w + 1, size=(n,))[:, None, None]
  region = (rows, dst_r + np.arange(h)[None, :, None], dst_c + np.arange(w)[None, None, :])
  canvas[region] = np.maximum(canvas[region], images)
  return canvas


def load_backgrounds(bsds_dir: str | os.PathLike | None = None) -> list[np.ndarray]:
  """Reads the BSDS500 training photos (``--bsds-dir`` or ``$GAPMMD_BSDS_DIR``).

  Returns:
    List of ``[H, W, 3]`` uint8 images, sorted by file name.
  """
  from PIL import Image

  directory = bsds_dir if bsds_dir is not None else os.environ.get(BSDS_DIR_ENV)
  if not directory:
    raise FileNotFoundError(
      f"MNIST-M needs the BSDS500 training photos: pass --bsds-dir DIR or set "
      f"{BSDS_DIR_ENV}=DIR (the folder BSR/BSDS500/data/images/train with *.jpg)."
    )
  paths = sorted(pathlib.Path(directory).expanduser().glob("*.jpg"))
  if not paths:
    raise FileNotFoundError(
      f"no *.jpg photos in {directory} (from "
      f"{'--bsds-dir' if bsds_dir is not None else '$' + BSDS_DIR_ENV})."
    )
  return [np.asarray(Image.open(p).convert("RGB"), np.uint8) for p in paths]


def mnist_m(images: np.ndarray, backgrounds: list[np.ndarray], *, seed: int) -> np.ndarray:
  """Blends each binarised digit with a random photo crop: ``|crop - digit|``.

  The recipe of Ganin & Lempitsky (2015): a random 28x28 crop of a random
  photo, and the digit thresholded at half intensity, as white RGB.

  Args:
    images: ``[N, 28, 28]`` uint8 digits.
    backgrounds: photos ``[H, W, 3]`` uint8, each at least as large as a digit.
    seed: seed of every random choice.

  Returns:
    ``[N, 28, 28, 3]`` uint8.
  """
  images = np.asarray(images)
  if images.ndim != 3 or images.dtype != np.uint8:
    raise ValueError(f"images must be [N, H, W] uint8, got {images.shape} {images.dtype}.")
  n, h, w = images.shape
  rng = np.random.default_rng(seed)
  choice = rng.integers(0, len(backgrounds), size=(n,))
  out = np.empty((n, h, w, 3), np.uint8)
  digit = np.where(images > 127, 255, 0).astype(np.int16)[..., None]
  for i, photo_index in enumerate(choice):
    photo = backgrounds[photo_index]
    r = rng.integers(0, photo.shape[0] - h + 1)
    c = rng.integers(0, photo.shape[1] - w + 1)
    crop = photo[r : r + h, c : c + w].astype(np.int16)
    out[i] = np.abs(crop - digit[i]).astype(np.uint8)
  return out


def _cached(name: str, params: dict, build) -> np.ndarray:
  tag = hashlib.sha256(repr(sorted(params.items())).encode()).hexdigest()[:16]
  path = cache_dir() / "generated" / f"{name}-{tag}.npz"
  if path.is_file():
    return np.load(path)["images"]
  images = build()
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.with_name(path.name + ".partial.npz")
  np.savez(partial, images=images)
  os.replace(partial, path)
  return images


def load_cluttered_mnist(
  split: str = "train",
  *,
  seed: int = 0,
  canvas_size: int = 60,
  num_clutter: int = 4,
  clutter_size: int = 8,
  data_dir=None,
) -> tuple[np.ndarray, np.ndarray]:
  """Cluttered MNIST of a split, generated once per setting and cached.

  Returns:
    ``(images [N, canvas, canvas] uint8, labels [N] int32)``; labels are MNIST's.
  """
  digits, labels = load_mnist(split, data_dir=data_dir)
  params = dict(
    split=split,
    seed=seed,
    canvas_size=canvas_size,
    num_clutter=num_clutter,
    clutter_size=clutter_size,
    digits=hashlib.sha256(digits.tobytes()).hexdigest(),
  )
  images = _cached(
    "cluttered_mnist",
    params,
    lambda: cluttered_mnist(
      digits,
      seed=seed + (split == "test"),
      canvas_size=canvas_size,
      num_clutter=num_clutter,
      clutter_size=clutter_size,
    ),
  )
  return images, labels


def load_mnist_m(
  split: str = "train", *, seed: int = 0, data_dir=None, bsds_dir=None
) -> tuple[np.ndarray, np.ndarray]:
  """MNIST-M of a split, generated once per seed and cached.

  Returns:
    ``(images [N, 28, 28, 3] uint8, labels [N] int32)``; labels are MNIST's.
  """
  digits, labels = load_mnist(split, data_dir=data_dir)
  backgrounds = load_backgrounds(bsds_dir)
  params = dict(
    split=split,
    seed=seed,
    digits=hashlib.sha256(digits.tobytes()).hexdigest(),
    photos=hashlib.sha256(b"".join(p.tobytes() for p in backgrounds)).hexdigest(),
  )
  images = _cached(
    "mnist_m", params, lambda: mnist_m(digits, backgrounds, seed=seed + (split == "test"))
  )
  return images, labels

"""Datasets: the IDX reader, MNIST sources, generated variants and batching."""

from gapmmd_jax.data._augment import (
  centre_crop,
  crop_resize,
  iic_official_transform,
  iic_torchvision_transform,
  keras_book_transform,
  pil_crop_resize,
  random_rotate_or_crop,
  random_translate,
)
from gapmmd_jax.data._batching import epoch_permutations, put_replicated, take_batch
from gapmmd_jax.data._generated import (
  BSDS_DIR_ENV,
  cluttered_mnist,
  load_backgrounds,
  load_cluttered_mnist,
  load_mnist_m,
  mnist_m,
)
from gapmmd_jax.data._idx import parse_idx, read_idx
from gapmmd_jax.data._mnist import DATA_DIR_ENV, DataNotFoundError, cache_dir, load_mnist

__all__ = [
  "BSDS_DIR_ENV",
  "DATA_DIR_ENV",
  "DataNotFoundError",
  "cache_dir",
  "centre_crop",
  "cluttered_mnist",
  "crop_resize",
  "epoch_permutations",
  "iic_official_transform",
  "iic_torchvision_transform",
  "keras_book_transform",
  "load_backgrounds",
  "load_cluttered_mnist",
  "load_mnist",
  "load_mnist_m",
  "mnist_m",
  "parse_idx",
  "pil_crop_resize",
  "put_replicated",
  "random_rotate_or_crop",
  "random_translate",
  "read_idx",
  "take_batch",
]

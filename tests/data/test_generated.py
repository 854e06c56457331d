"""Cluttered MNIST, MNIST-M and on-device batching."""

import jax
import numpy as np
import pytest

from gapmmd_jax import data


@pytest.fixture(scope="module")
def digits(mnist_dir):
  images, labels = data.load_mnist("test", data_dir=mnist_dir)
  return images[:300], labels[:300]


def test_cluttered_mnist_is_deterministic_and_contains_the_digit(digits):
  images, _ = digits
  a = data.cluttered_mnist(images, seed=0)
  assert a.shape == (300, 60, 60) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, data.cluttered_mnist(images, seed=0))
  assert not np.array_equal(a, data.cluttered_mnist(images, seed=1))
  # Each canvas holds its digit (pixel-wise max with clutter) somewhere.
  no_clutter = data.cluttered_mnist(images, seed=0, num_clutter=0)
  np.testing.assert_array_equal(no_clutter.reshape(300, -1).sum(1), images.reshape(300, -1).sum(1))
  assert np.all(a.reshape(300, -1).sum(1) >= images.reshape(300, -1).sum(1))


def test_cached_loaders_keep_labels(mnist_dir, bsds_dir):
  images, labels = data.load_cluttered_mnist("test", data_dir=mnist_dir)
  again, _ = data.load_cluttered_mnist("test", data_dir=mnist_dir)
  np.testing.assert_array_equal(images, again)
  np.testing.assert_array_equal(labels, data.load_mnist("test", data_dir=mnist_dir)[1])
  assert images.shape == (10000, 60, 60)


def test_mnist_m(digits, bsds_dir):
  images, _ = digits
  photos = data.load_backgrounds(bsds_dir)
  assert len(photos) == 200
  a = data.mnist_m(images, photos, seed=0)
  assert a.shape == (300, 28, 28, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, data.mnist_m(images, photos, seed=0))
  assert not np.array_equal(a, data.mnist_m(images, photos, seed=1))
  # Off the digit, the pixels are the photo crop: colourful, with the photos' mean.
  background = a[images < 128]
  photo_mean = np.mean([p.reshape(-1, 3).mean(0) for p in photos], axis=0)
  np.testing.assert_allclose(background.mean(0), photo_mean, atol=15)
  assert background.std(0).min() > 30
  # On the digit, |crop - 255| inverts the crop.
  assert a[images > 127].mean() != pytest.approx(background.mean(), abs=5)


def test_bsds_missing_message(monkeypatch, tmp_path):
  monkeypatch.delenv("GAPMMD_BSDS_DIR", raising=False)
  with pytest.raises(FileNotFoundError, match="GAPMMD_BSDS_DIR"):
    data.load_backgrounds()
  with pytest.raises(FileNotFoundError, match=r"no \*.jpg photos"):
    data.load_backgrounds(tmp_path)


def test_on_device_batches_follow_the_epoch_permutation():
  arrays = {"x": np.arange(20) * 10, "y": np.arange(20)}
  keys = jax.vmap(jax.random.key)(np.arange(2))
  perm = data.epoch_permutations(keys, 3, 20)
  assert perm.shape == (2, 20)
  for row in np.asarray(perm):
    np.testing.assert_array_equal(np.sort(row), np.arange(20))
  batch = data.take_batch(arrays, perm, 1, 8)
  np.testing.assert_array_equal(batch["y"], np.asarray(perm)[:, 8:16])
  np.testing.assert_array_equal(batch["x"], 10 * batch["y"])
  assert not np.array_equal(perm, data.epoch_permutations(keys, 4, 20))

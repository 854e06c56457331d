"""IDX reader, MNIST sources and their error messages."""

import gzip
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from gapmmd_jax import data

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("split,counts", [("train", TRAIN_COUNTS), ("test", TEST_COUNTS)])
def test_real_mnist(mnist_dir, split, counts):
  images, labels = data.load_mnist(split, data_dir=mnist_dir)
  assert images.shape == (sum(counts), 28, 28) and images.dtype == np.uint8
  assert labels.shape == (sum(counts),) and labels.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(labels), counts)
  if split == "train":  # the statistics given in shared/data/README.md
    assert images.mean() / 255 == pytest.approx(0.13071, abs=1e-4)
    assert images.std() / 255 == pytest.approx(0.30824, abs=1e-4)


def test_environment_variable_and_raw_files(mnist_dir, tmp_path, monkeypatch):
  for name in data._mnist.idx_file_names("test"):
    (tmp_path / name.removesuffix(".gz")).write_bytes(
      gzip.decompress((mnist_dir / name).read_bytes())
    )
  monkeypatch.setenv("GAPMMD_DATA_DIR", str(tmp_path))
  images, labels = data.load_mnist("test")
  assert images.shape == (10000, 28, 28) and labels[:3].tolist() == [7, 2, 1]


def write_idx(path, magic, shape, payload):
  header = bytes([0, 0, magic, len(shape)]) + b"".join(s.to_bytes(4, "big") for s in shape)
  path.write_bytes(header + payload)


def test_idx_validation(tmp_path):
  write_idx(tmp_path / "ok", 0x08, (2, 3), bytes(range(6)))
  np.testing.assert_array_equal(data.read_idx(tmp_path / "ok"), np.arange(6).reshape(2, 3))
  write_idx(tmp_path / "short", 0x08, (2, 3), bytes(5))
  with pytest.raises(ValueError, match="truncated or corrupt"):
    data.read_idx(tmp_path / "short")
  (tmp_path / "magic").write_bytes(b"\x12\x34\x08\x01" + bytes(8))
  with pytest.raises(ValueError, match="not an IDX file"):
    data.read_idx(tmp_path / "magic")
  write_idx(tmp_path / "type", 0x07, (1,), bytes(1))
  with pytest.raises(ValueError, match="unknown IDX type code"):
    data.read_idx(tmp_path / "type")


def test_truncated_gzip_is_a_clear_error(mnist_dir, tmp_path):
  raw = (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
  (tmp_path / "cut.gz").write_bytes(raw[: len(raw) // 2])
  with pytest.raises(ValueError, match="corrupt or truncated gzip"):
    data.read_idx(tmp_path / "cut.gz")


def test_missing_directory_message(tmp_path):
  missing = tmp_path / "nowhere"
  with pytest.raises(data.DataNotFoundError) as info:
    data.load_mnist("train", data_dir=missing)
  message = str(info.value)
  assert "train-images-idx3-ubyte.gz" in message and "train-labels-idx1-ubyte.gz" in message
  assert str(missing) in message and "no such directory" in message


def test_nothing_found_message_names_places_and_variable(tmp_path, monkeypatch):
  monkeypatch.delenv("GAPMMD_DATA_DIR", raising=False)
  monkeypatch.setenv("GAPMMD_CACHE_DIR", str(tmp_path / "cache"))
  with pytest.raises(data.DataNotFoundError) as info:
    data.load_mnist("test", dataset="fashion_mnist")
  message = str(info.value)
  for part in (
    "t10k-images-idx3-ubyte.gz",
    str(tmp_path / "cache"),
    "tensorflow-datasets",
    "GAPMMD_DATA_DIR",
  ):
    assert part in message


def test_tfds_source_with_mock_data(tmp_path, monkeypatch):
  monkeypatch.delenv("GAPMMD_DATA_DIR", raising=False)
  monkeypatch.setenv("GAPMMD_CACHE_DIR", str(tmp_path))
  with tfds.testing.mock_data(num_examples=12):
    images, labels = data.load_mnist("train", download=False)
  assert images.shape == (12, 28, 28) and images.dtype == np.uint8
  assert labels.shape == (12,) and labels.dtype == np.int32 and labels.max() < 10


def test_cache_directory_is_read(mnist_dir, tmp_path, monkeypatch):
  monkeypatch.delenv("GAPMMD_DATA_DIR", raising=False)
  monkeypatch.setenv("GAPMMD_CACHE_DIR", str(tmp_path))
  shutil.copytree(mnist_dir, tmp_path / "mnist")
  images, _ = data.load_mnist("test")
  assert images.shape == (10000, 28, 28)


class _FakeResponse:
  def __init__(self, payload):
    self.payload = payload

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False

  def read(self):
    return self.payload


def test_download_verifies_checksums(mnist_dir, tmp_path, monkeypatch):
  """The download path, served from local files (these machines have no network)."""
  import hashlib
  import urllib.request

  monkeypatch.delenv("GAPMMD_DATA_DIR", raising=False)
  monkeypatch.setenv("GAPMMD_CACHE_DIR", str(tmp_path))
  monkeypatch.setattr(data._mnist, "_load_tfds", lambda *args: None)
  requested = []

  def fake_urlopen(url, timeout):
    requested.append((url, timeout))
    return _FakeResponse((mnist_dir / url.rsplit("/", 1)[1]).read_bytes())

  monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
  # The shared copies were recompressed, so the published checksums reject them ...
  with pytest.raises(ValueError, match="has SHA-256"):
    data.load_mnist("test", timeout=5.0)
  assert not list(tmp_path.glob("mnist/*.gz"))  # nothing unverified is kept
  # ... and with their own checksums the download lands in the cache and loads.
  sums = {
    name: hashlib.sha256((mnist_dir / name).read_bytes()).hexdigest()
    for name in data._mnist.idx_file_names("test")
  }
  monkeypatch.setattr(data._mnist, "_MNIST_SHA256", sums)
  images, labels = data.load_mnist("test", timeout=5.0)
  assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
  assert all(timeout == 5.0 for _, timeout in requested)
  assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(sums)

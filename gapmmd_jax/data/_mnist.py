"""Finding and loading MNIST-layout datasets.

Sources, in order: an explicit directory (``--data-dir`` or the
``GAPMMD_DATA_DIR`` environment variable), a prepared tensorflow-datasets
dataset read through ``tfds.data_source`` (no TensorFlow needed), and, for
MNIST on a machine with network access, a download of the four standard files
into the user cache with SHA-256 verification.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import urllib.request

import numpy as np

from gapmmd_jax.data._idx import read_idx

DATA_DIR_ENV = "GAPMMD_DATA_DIR"
CACHE_DIR_ENV = "GAPMMD_CACHE_DIR"
DATASETS = ("mnist", "fashion_mnist")
SPLITS = ("train", "test")
_FILE_PREFIX = {"train": "train", "test": "t10k"}
_DOWNLOAD_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
# Published SHA-256 of the original gzip files.
_MNIST_SHA256 = {
  "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
  "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
  "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
  "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}


class DataNotFoundError(FileNotFoundError):
  """No source had the requested dataset; the message says where we looked."""


def cache_dir() -> pathlib.Path:
  """Where downloads and generated datasets are cached (``GAPMMD_CACHE_DIR``)."""
  default = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
  return pathlib.Path(os.environ.get(CACHE_DIR_ENV, default / "gapmmd_jax"))


def idx_file_names(split: str) -> tuple[str, str]:
  """The standard (images, labels) file names of a split."""
  prefix = _FILE_PREFIX[split]
  return f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"


def _find_file(directory: pathlib.Path, name: str) -> pathlib.Path | None:
  for candidate in (directory / name, directory / name.removesuffix(".gz")):
    if candidate.is_file():
      return candidate
  return None


def _load_idx_pair(directory: pathlib.Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
  paths = [_find_file(directory, name) for name in idx_file_names(split)]
  images_path, labels_path = paths
  if images_path is None or labels_path is None:
    return None
  images, labels = read_idx(images_path), read_idx(labels_path)
  if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
    raise ValueError(
      f"{directory}: images {images.shape} and labels {labels.shape} do not "
      "form a dataset (expected [N, H, W] and [N])."
    )
  return images.astype(np.uint8), labels.astype(np.int32)


def _load_tfds(dataset: str, split: str) -> tuple[np.ndarray, np.ndarray] | None:
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    return None
  try:
    source = tfds.data_source(dataset, split=split, download=False)
    count = len(source)
  except Exception:  # tfds raises several types for "not prepared"; any means unusable.
    return None
  records = [source[i] for i in range(count)]
  images = np.stack([np.asarray(r["image"], np.uint8).reshape(28, 28) for r in records])
  labels = np.asarray([int(r["label"]) for r in records], np.int32)
  return images, labels


def _download(directory: pathlib.Path, names, timeout: float) -> None:
  directory.mkdir(parents=True, exist_ok=True)
  for name in names:
    target = directory / name
    if target.is_file() and _sha256(target) == _MNIST_SHA256[name]:
      continue
    with urllib.request.urlopen(_DOWNLOAD_URL + name, timeout=timeout) as response:
      payload = response.read()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != _MNIST_SHA256[name]:
      raise ValueError(f"downloaded {name} has SHA-256 {digest}, expected {_MNIST_SHA256[name]}.")
    partial = target.with_suffix(".partial")
    partial.write_bytes(payload)
    os.replace(partial, target)


def _sha256(path: pathlib.Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def load_mnist(
  split: str = "train",
  *,
  dataset: str = "mnist",
  data_dir: str | os.PathLike | None = None,
  download: bool = True,
  timeout: float = 30.0,
) -> tuple[np.ndarray, np.ndarray]:
  """Loads a split of MNIST or Fashion-MNIST.

  Args:
    split: ``"train"`` or ``"test"``.
    dataset: ``"mnist"`` or ``"fashion_mnist"``.
    data_dir: directory with the four IDX files (``.gz`` or raw); defaults
      to ``$GAPMMD_DATA_DIR``. When given, it is the only place looked at.
    download: allow the MNIST download into the cache as a last resort.
    timeout: seconds per downloaded file.

  Returns:
    ``(images, labels)``: ``[N, 28, 28]`` uint8 and ``[N]`` int32.

  Raises:
    DataNotFoundError: no source had the data; the message names the files,
      the directories tried and the variable to set.
  """
  if dataset not in DATASETS:
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}.")
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  names = idx_file_names(split)
  explicit = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
  if explicit:
    directory = pathlib.Path(explicit).expanduser()
    if directory.is_dir() and (found := _load_idx_pair(directory, split)) is not None:
      return found
    raise DataNotFoundError(
      f"{dataset} {split} split not found: looked for {', '.join(names)} (or without .gz) "
      f"in {directory} ({'exists' if directory.is_dir() else 'no such directory'}), given by "
      f"{'--data-dir' if data_dir is not None else '$' + DATA_DIR_ENV}."
    )
  cached = cache_dir() / dataset
  if (found := _load_idx_pair(cached, split)) is not None:
    return found
  if (found := _load_tfds(dataset, split)) is not None:
    return found
  tried = [f"{cached} (cache)", f"tensorflow-datasets '{dataset}' (not prepared)"]
  if download and dataset == "mnist":
    try:
      _download(cached, names, timeout)
      if (found := _load_idx_pair(cached, split)) is not None:
        return found
      tried.append(f"download from {_DOWNLOAD_URL} (files incomplete after download)")
    except OSError as e:
      tried.append(f"download from {_DOWNLOAD_URL} ({e})")
  raise DataNotFoundError(
    f"{dataset} {split} split not found. Looked for {', '.join(names)} in: "
    f"{'; '.join(tried)}. Put the IDX files in a directory and set {DATA_DIR_ENV}=DIR "
    "(or pass --data-dir DIR)."
  )

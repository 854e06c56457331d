"""Reader for the IDX format of MNIST and Fashion-MNIST (gzip or raw)."""

from __future__ import annotations

import gzip
import os

import numpy as np

# Third byte of the magic number -> element dtype (big-endian where it matters).
_IDX_DTYPES: dict[int, np.dtype] = {
  0x08: np.dtype(np.uint8),
  0x09: np.dtype(np.int8),
  0x0B: np.dtype(">i2"),
  0x0C: np.dtype(">i4"),
  0x0D: np.dtype(">f4"),
  0x0E: np.dtype(">f8"),
}


def parse_idx(raw: bytes, *, source: str = "<bytes>") -> np.ndarray:
  """Parses IDX bytes into an array, validating the header against the size.

  Raises:
    ValueError: wrong magic number, unknown type code, or a payload whose size
      does not match the dimensions in the header (e.g. a truncated file).
  """
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
    raise ValueError(
      f"{source}: not an IDX file (magic bytes {raw[:4].hex() or 'missing'}, expected 0000TTNN)."
    )
  type_code, ndim = raw[2], raw[3]
  if type_code not in _IDX_DTYPES:
    raise ValueError(f"{source}: unknown IDX type code 0x{type_code:02x}.")
  if ndim == 0:
    raise ValueError(f"{source}: IDX header declares 0 dimensions.")
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise ValueError(f"{source}: truncated IDX header ({len(raw)} bytes, need {header}).")
  shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
  dtype = _IDX_DTYPES[type_code]
  expected = header + int(np.prod(shape)) * dtype.itemsize
  if len(raw) != expected:
    raise ValueError(
      f"{source}: IDX header says shape {shape} ({expected} bytes in all) "
      f"but the file has {len(raw)} bytes; it is truncated or corrupt."
    )
  return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an IDX file, gzip-compressed (``.gz``) or raw.

  Returns:
    The array with the header's shape, e.g. ``[60000, 28, 28]`` uint8.
  """
  path = os.fspath(path)
  with open(path, "rb") as f:
    raw = f.read()
  if raw[:2] == b"\x1f\x8b":
    try:
      raw = gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, OSError) as e:
      raise ValueError(f"{path}: corrupt or truncated gzip stream ({e}).") from e
  return parse_idx(raw, source=path)

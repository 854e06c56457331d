"""Trace-time argument checks shared by the public functions.

Every check looks only at shapes, dtypes and Python values, so it runs once
while tracing and never inside compiled code.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np


def as_float_array(name: str, x: jax.typing.ArrayLike) -> jax.Array:
  """Converts ``x`` to a floating array, low precision promoted to float32.

  Raises:
    TypeError: ``x`` is not numeric (e.g. a string or boolean array).
  """
  dtype = getattr(x, "dtype", None)
  if dtype is None:
    x = np.asarray(x)
    dtype = x.dtype
  if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
    raise TypeError(f"{name} must be a real numeric array, got dtype {dtype}.")
  target = jnp.promote_types(dtype, jnp.float32)
  if not jnp.issubdtype(target, jnp.floating):
    target = jnp.float32
  return jnp.asarray(x, dtype=jax.dtypes.canonicalize_dtype(target))


def check_rank(name: str, x: jax.Array, rank: int, shape_doc: str) -> None:
  if x.ndim != rank:
    raise ValueError(f"{name} must have shape {shape_doc}, got shape {tuple(x.shape)}.")


def check_samples(
  x_name: str, x: jax.typing.ArrayLike, y_name: str, y: jax.typing.ArrayLike, *, min_rows: int = 1
) -> tuple[jax.Array, jax.Array]:
  """Validates two sample sets ``[n, d]`` and ``[m, d]`` and promotes their dtype.

  Returns:
    ``(x, y)`` as floating arrays of one common dtype (at least float32).
  """
  x = as_float_array(x_name, x)
  y = as_float_array(y_name, y)
  check_rank(x_name, x, 2, "[n, d]")
  check_rank(y_name, y, 2, "[m, d]")
  if x.shape[1] != y.shape[1]:
    raise ValueError(
      f"{x_name} and {y_name} must have the same feature dimension d, got "
      f"{x_name}.shape={tuple(x.shape)} and {y_name}.shape={tuple(y.shape)}."
    )
  if x.shape[1] == 0:
    raise ValueError(f"{x_name} and {y_name} have feature dimension 0.")
  for name, arr in ((x_name, x), (y_name, y)):
    if arr.shape[0] < min_rows:
      raise ValueError(f"{name} needs at least {min_rows} rows, got shape {tuple(arr.shape)}.")
  dtype = jnp.promote_types(x.dtype, y.dtype)
  return x.astype(dtype), y.astype(dtype)


def concrete_or_none(x) -> np.ndarray | None:
  """The value of ``x`` as NumPy if it is known at trace time, else ``None``."""
  if isinstance(x, jax.core.Tracer):
    return None
  try:
    return np.asarray(x)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return None


def check_positive(name: str, value) -> None:
  """Raises ``ValueError`` if a concrete ``value`` has an entry <= 0."""
  concrete = concrete_or_none(value)
  if concrete is not None and np.any(concrete <= 0):
    raise ValueError(f"{name} must be > 0, got {concrete}.")


def check_choice(name: str, value, choices) -> None:
  if value not in choices:
    raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}.")


def check_int(name: str, value, minimum: int) -> None:
  if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def check_tiling(*, chunk_size=None, block_size=None) -> None:
  """The tile walk's ``chunk_size`` and ``block_size``: each ``None`` (its default) or an
  integer >= 1."""
  for name, value in (("chunk_size", chunk_size), ("block_size", block_size)):
    if value is not None:
      check_int(name, value, 1)


def check_paired(
  a_name: str, a: jax.typing.ArrayLike, b_name: str, b: jax.typing.ArrayLike, shape_doc: str
) -> tuple[jax.Array, jax.Array]:
  """Two floating arrays of one non-empty shape of rank ``len(shape_doc)`` (e.g. ``[B, C]``)."""
  a = as_float_array(a_name, a)
  b = as_float_array(b_name, b)
  check_rank(a_name, a, shape_doc.count(",") + 1, shape_doc)
  if a.shape != b.shape or a.shape[0] == 0:
    raise ValueError(
      f"{a_name} and {b_name} must have the same non-empty shape {shape_doc}, "
      f"got {tuple(a.shape)} and {tuple(b.shape)}."
    )
  return a, b

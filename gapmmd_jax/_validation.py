"""Argument checks shared by the public functions.

The checks look at shapes, dtypes and Python values, so they run once while
tracing and never inside compiled code; :func:`check_finite` also looks at the
values of arrays that are known (eager calls), and :func:`nan_unless_finite`
covers traced ones inside the compiled code.
"""

from __future__ import annotations

import functools
import numbers
import warnings

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
    check_finite(name, arr)
  dtype = jnp.promote_types(x.dtype, y.dtype)
  return x.astype(dtype), y.astype(dtype)


@jax.jit
def _all_finite(x: jax.Array) -> jax.Array:
  return jnp.all(jnp.isfinite(x))


def check_finite(name: str, x: jax.Array) -> None:
  """Raises ``ValueError`` if ``x`` is known (not traced) and holds a NaN or an infinity.

  The test runs where ``x`` lives; only its boolean comes to the host. A known array used
  inside an outer ``jit`` (a constant the traced function closes over) is checked too.
  """
  if isinstance(x, jax.core.Tracer):
    return
  with jax.ensure_compile_time_eval():
    if bool(_all_finite(x)):
      return
  bad = np.argwhere(~np.isfinite(np.asarray(x)))
  raise ValueError(
    f"{name} holds {len(bad)} non-finite entries (NaN or infinity), the first at index "
    f"{tuple(int(i) for i in bad[0])}."
  )


def nan_unless_finite(result, *inputs: jax.Array):
  """``result`` (a pytree of arrays) with its floating leaves NaN and its boolean leaves
  False when any of ``inputs`` holds a NaN or an infinity.

  Under ``jit`` a bad value cannot raise; this keeps it from coming out as a plausible
  statistic, p-value or rejection (an identity, gradients included, for finite inputs).
  """
  finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in inputs]))

  def guard(leaf: jax.Array) -> jax.Array:
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      return jnp.where(finite, leaf, jnp.nan)
    if leaf.dtype == jnp.bool_:
      return leaf & finite
    return leaf

  return jax.tree.map(guard, result)


def concrete_or_none(x) -> np.ndarray | None:
  """The value of ``x`` as NumPy if it is known at trace time, else ``None``."""
  if isinstance(x, jax.core.Tracer):
    return None
  try:
    return np.asarray(x)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return None


def check_level(name: str, value) -> None:
  """Raises ``ValueError`` unless ``value`` is a number in (0, 1) (a test's level)."""
  if not isinstance(value, numbers.Real) or not 0 < float(value) < 1:
    raise ValueError(f"{name} must be a number in (0, 1), got {value!r}.")


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
  """Two finite floating arrays of one non-empty shape of rank ``len(shape_doc)`` (e.g.
  ``[B, C]``)."""
  a = as_float_array(a_name, a)
  b = as_float_array(b_name, b)
  check_rank(a_name, a, shape_doc.count(",") + 1, shape_doc)
  if a.shape != b.shape or a.shape[0] == 0:
    raise ValueError(
      f"{a_name} and {b_name} must have the same non-empty shape {shape_doc}, "
      f"got {tuple(a.shape)} and {tuple(b.shape)}."
    )
  check_finite(a_name, a)
  check_finite(b_name, b)
  return a, b


def renamed_keywords(**renames: str):
  """Decorator: keyword ``old`` of the wrapped function is accepted as ``renames[old]``,
  with a ``DeprecationWarning`` naming the new keyword (for one release after a rename)."""

  def wrap(fn):
    @functools.wraps(fn)
    def call(*args, **kwargs):
      for old, new in renames.items():
        if old in kwargs:
          if new in kwargs:
            raise TypeError(f"{fn.__name__}() got both {old}= and {new}=; pass {new}= only.")
          warnings.warn(
            f"{fn.__name__}({old}=...) is deprecated: pass {new}= instead.",
            DeprecationWarning,
            stacklevel=2,
          )
          kwargs[new] = kwargs.pop(old)
      return fn(*args, **kwargs)

    return call

  return wrap

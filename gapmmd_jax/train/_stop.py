"""Stopping a training run early and cleanly: the ``gapmmd`` command turns SIGINT and SIGTERM
into a stop request that :func:`~gapmmd_jax.train.fit` honours after its steps in flight."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

_requested: list[int] = []  # the signal that asked for the stop, once one has


class StopRequested(RuntimeError):
  """Raised by :func:`~gapmmd_jax.train.fit` when a stop was requested before it started."""


def request_stop(signum: int) -> None:
  """Asks the running ``fit`` to stop after its steps in flight (the running call and at
  most one queued behind it): it evaluates, checkpoints and writes its summary there
  (``stopped_by``); a later ``fit`` raises :class:`StopRequested`."""
  if not _requested:
    _requested.append(signum)


def stop_signal() -> int | None:
  """The signal of the stop request, or ``None``."""
  return _requested[0] if _requested else None


def clear_stop() -> None:
  _requested.clear()


def _on_signal(signum: int, frame) -> None:
  if _requested:  # the second one: stop now
    raise KeyboardInterrupt
  request_stop(signum)
  print(
    f"{signal.Signals(signum).name}: stopping after the steps in flight, with an evaluation, "
    "a checkpoint and the summary there (send it again to stop at once)",
    file=sys.stderr,
    flush=True,
  )


@contextlib.contextmanager
def stop_on_signals(enabled: bool = True) -> Iterator[None]:
  """Within the block, the first SIGINT or SIGTERM requests a clean stop and a second one
  interrupts at once; the handlers (main thread only) and the request are undone after."""
  installed = {}
  if enabled and threading.current_thread() is threading.main_thread():
    installed = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
  clear_stop()
  try:
    yield
  finally:
    for sig, handler in installed.items():
      signal.signal(sig, handler)
    clear_stop()

"""XLA settings for the ``gapmmd`` command: named configurations and the measured-fastest one.

The library never sets anything on import. The CLI (``gapmmd --xla CHOICE``)
sets ``XLA_FLAGS`` before JAX creates its backends. The choices are the cells
of ``gapmmd bench train``; ``auto`` (the default) takes, per experiment, the one
that benchmark measured fastest on a CPU (``docs/benchmarks.md``, "Train-step throughput").
They change how XLA computes (kernels, how the batch is split over host
devices), so results differ in float rounding only: seeds, batches and
schedules do not depend on them.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import NamedTuple

# XLA's CPU backend runs dots, including the weight gradients of convolutions,
# through YNNPACK. Experimental in jaxlib 0.10.
YNN_DOTS = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
HOST_DEVICES = "--xla_force_host_platform_device_count"
# With host devices, every collective is a rendezvous of one thread per device,
# and XLA warns when they arrive 20 s apart and ends the process 40 s after that
# (its defaults). On a loaded machine a device's thread can lag that much (a
# 4-device run aborted so on 2 busy cores), so runs with host devices warn after
# 2 minutes and end after 12: a lag ends with an answer, a hang still ends.
COLLECTIVE_TIMEOUTS = (
  "--xla_cpu_collective_call_terminate_timeout_seconds=600",
  "--xla_cpu_collective_call_warn_stuck_timeout_seconds=120",
)


class Setting(NamedTuple):
  """A CPU configuration: host devices the batch is split over, and the YNNPACK dots flag."""

  host_devices: int
  ynn_dots: bool


SETTINGS = {
  "default": Setting(1, False),
  "ynn": Setting(1, True),
  "2dev": Setting(2, False),
  "ynn-2dev": Setting(2, True),
  "4dev": Setting(4, False),
  "ynn-4dev": Setting(4, True),
}
CHOICES = ("auto", *SETTINGS)
# `auto` per experiment (or per step, where an experiment's module has an
# `xla_step(cfg)`): the fastest cell of `gapmmd bench train` for that step (2
# cores, jaxlib 0.10.2, two runs on 2026-11-29; `docs/benchmarks.md`,
# "Train-step throughput"). GAP-LeNet and the VAT CNN without its VAT loss: YNNPACK dots
# with the batch split over 2 host devices, 1.16-1.38x and 1.30-1.33x `ynn`
# alone (4 devices: no faster). The VAT CNN with its VAT loss, DANN, IIC and
# MINE clustering: `ynn` (host devices 0.89-1.00x for VAT + loss, slower for
# the rest); the semi-supervised VAT MLP, which counts as `vat`, too (`vat-mlp`:
# within noise of the default flags, host devices 2.3-3.4x slower). An
# experiment missing here (MINE on Gaussians: small dense nets) runs with the
# default setting.
FASTEST = {
  "gap-mmd": "ynn-2dev",
  "metric-survey": "ynn-2dev",
  "vat": "ynn",
  "vat --no-vat": "ynn-2dev",
  "adapt": "ynn",
  "iic": "ynn",
  "mine-cluster": "ynn",
}
# The jaxlib series the table was measured on; the YNNPACK flag is experimental
# and a later jaxlib may drop it (XLA rejects unknown flags), so `auto` leaves
# it out elsewhere and keeps only the host-device split.
MEASURED_JAXLIB = "0.10."


def with_xla_flags(*flags: str, base: str | None = None) -> str:
  """``base`` (default: ``$XLA_FLAGS``) with ``flags`` appended, space-separated, no repeats."""
  words = (os.environ.get("XLA_FLAGS", "") if base is None else base).split()
  return " ".join(words + [flag for flag in flags if flag and flag not in words])


def setting_flags(setting: Setting) -> list[str]:
  """The XLA flags of ``setting`` (host devices come with :data:`COLLECTIVE_TIMEOUTS`)."""
  devices = (
    [f"{HOST_DEVICES}={setting.host_devices}", *COLLECTIVE_TIMEOUTS]
    if setting.host_devices > 1
    else []
  )
  return devices + ([YNN_DOTS] if setting.ynn_dots else [])


def _accelerator_installed() -> bool:
  """Whether JAX will pick a GPU or TPU (a plugin is installed, or JAX_PLATFORMS says so)."""
  platforms = os.environ.get("JAX_PLATFORMS", "")
  if platforms:
    return platforms.split(",")[0].strip() not in ("cpu", "")
  names = {
    (d.metadata["Name"] or "").lower().replace("_", "-") for d in importlib.metadata.distributions()
  }
  return any(name.startswith(("jax-cuda", "jax-rocm", "libtpu")) for name in names)


def _jaxlib_version() -> str:
  try:
    return importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return ""


def _backends_initialized() -> bool:
  import jax._src.xla_bridge as xla_bridge  # importing JAX creates no backend

  return bool(getattr(xla_bridge, "backends_are_initialized", lambda: False)())


def choose(
  choice: str, command: str, *, batch_size: int | None = None, distributed: bool = False
) -> tuple[str, Setting, str]:
  """``(name, setting, why)`` for ``--xla choice`` of ``command``: an experiment, or the
  step its module's ``xla_step(cfg)`` names (a key of :data:`FASTEST`).

  ``auto`` takes :data:`FASTEST` on a CPU, nothing on a GPU or TPU; the host
  devices are cut to the largest count that divides ``batch_size`` (the batch
  is split evenly), and left alone for ``--distributed`` runs or when
  ``XLA_FLAGS`` already sets them.
  """
  if choice not in CHOICES:
    raise ValueError(f"--xla must be one of {CHOICES}, got {choice!r}.")
  if choice != "auto":
    name, why = choice, "chosen with --xla"
  elif _accelerator_installed():
    return "default", SETTINGS["default"], "auto: an accelerator backend is installed"
  else:
    name = FASTEST.get(command, "default")
    why = f"auto: the fastest measured for {command} on CPU"
  setting = SETTINGS[name]
  if choice == "auto" and setting.ynn_dots and not _jaxlib_version().startswith(MEASURED_JAXLIB):
    setting = setting._replace(ynn_dots=False)
    why += f" (without YNNPACK dots: measured on jaxlib {MEASURED_JAXLIB}x only)"
  devices = setting.host_devices
  if distributed or HOST_DEVICES in os.environ.get("XLA_FLAGS", ""):
    devices = 1
  while batch_size and devices > 1 and batch_size % devices:
    devices -= 1
  if devices != setting.host_devices:
    why += f" (host devices {setting.host_devices} -> {devices})"
  return name, setting._replace(host_devices=devices), why


def configure(
  choice: str, command: str, *, batch_size: int | None = None, distributed: bool = False
) -> str:
  """Adds the flags of :func:`choose` to ``$XLA_FLAGS``; returns a line saying what was set.

  Does nothing once JAX has created its backends (the flags would not apply).
  """
  name, setting, why = choose(choice, command, batch_size=batch_size, distributed=distributed)
  flags = setting_flags(setting)
  if _backends_initialized():
    return f"XLA: {name} not applied (JAX's backends already exist); XLA_FLAGS unchanged"
  if flags:
    os.environ["XLA_FLAGS"] = with_xla_flags(*flags)
  return f"XLA: {name} ({why}): {' '.join(flags) or 'no flags'}"

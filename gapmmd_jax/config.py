"""Typed experiment configs with named variants, overridable from the command line.

An experiment declares a frozen dataclass (fields with defaults and a one-line
``help`` in their metadata) and a dict of named variants. :func:`add_arguments`
turns the fields into ``--flags`` whose help shows each variant's value, and
:func:`from_arguments` resolves ``variant + overrides`` into a config.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from typing import Any


def option(default: Any, help: str) -> Any:
  """A config field with a default and a help line."""
  if isinstance(default, (list, dict, set)):
    raise TypeError("use a tuple for sequence defaults (configs are immutable).")
  return dataclasses.field(default=default, metadata={"help": help})


def check_finite(config: Any) -> None:
  """Raises ``ValueError`` naming the first float field (or float in a tuple) that is NaN or
  infinite: such an option would train to the end on NaN losses."""
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    values = value if isinstance(value, tuple) else (value,)
    if any(isinstance(x, float) and not math.isfinite(x) for x in values):
      raise ValueError(f"{field.name} must be finite, got {value}.")


def _flag(name: str) -> str:
  return "--" + name.replace("_", "-")


def add_arguments(
  parser: argparse.ArgumentParser, config_cls: type, variants: dict[str, Any], default_variant: str
) -> None:
  """Adds ``--variant`` and one flag per config field to ``parser``."""
  parser.add_argument(
    "--variant",
    choices=sorted(variants),
    default=default_variant,
    help=f"named preset the flags below override (default: {default_variant})",
  )
  hints = typing.get_type_hints(config_cls)
  for field in dataclasses.fields(config_cls):
    values = ", ".join(f"{name}={getattr(cfg, field.name)!r}" for name, cfg in variants.items())
    help_text = f"{field.metadata.get('help', '')} [{values}]"
    hint = hints[field.name]
    kwargs: dict[str, Any] = dict(default=None, help=help_text, dest=field.name)
    if hint is bool:
      kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(hint) is tuple:
      kwargs.update(nargs="+", type=typing.get_args(hint)[0])
    elif typing.get_origin(hint) in (typing.Union, types.UnionType):
      inner = next(a for a in typing.get_args(hint) if a is not type(None))
      kwargs["type"] = inner
    elif typing.get_origin(hint) is typing.Literal:  # of one type: str, or int as 3 / 5
      kwargs["choices"] = typing.get_args(hint)
      kwargs["type"] = type(kwargs["choices"][0])
    else:
      kwargs["type"] = hint
    parser.add_argument(_flag(field.name), **kwargs)


def from_arguments(args: argparse.Namespace, variants: dict[str, Any]) -> Any:
  """The chosen variant with every flag the user gave applied."""
  base = variants[args.variant]
  overrides = {
    f.name: getattr(args, f.name)
    for f in dataclasses.fields(base)
    if getattr(args, f.name, None) is not None
  }
  overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
  return dataclasses.replace(base, **overrides)


def to_dict(config: Any) -> dict[str, Any]:
  """JSON-ready dict of a config."""
  return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def from_dict(cls: type, saved: typing.Mapping[str, Any]) -> Any:
  """The ``cls`` config of a dict from :func:`to_dict` (a run's ``config.json``): lists back
  to tuples; keys that are not fields of ``cls`` (``experiment``, ``xla_flags``) left out, and
  fields it lacks (added since) at their defaults."""
  names = {field.name for field in dataclasses.fields(cls)}
  return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in names})

"""The documentation covers the package: every public name has an entry, every command its help.

The build itself (executing the tutorials, warnings as errors) runs in ``.ci/run``;
these checks are fast and say which name is missing.
"""

import pathlib
import re

import pytest

import gapmmd_jax
from gapmmd_jax import cli, data, losses, models, train
from gapmmd_jax.experiments import EXPERIMENTS

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
API = "\n".join(p.read_text() for p in sorted((DOCS / "api").glob("*.md")))
DOCUMENTED = set(re.findall(r"^\.\. auto\w+:: ([\w.]+)", API, re.M))


def _short(name: str) -> str:
  return name.rsplit(".", 1)[-1]


@pytest.mark.parametrize(
  "package", [gapmmd_jax, losses, models, train, data], ids=lambda p: p.__name__
)
def test_every_public_name_has_an_api_entry(package):
  documented = {_short(name) for name in DOCUMENTED}
  missing = sorted(set(package.__all__) - documented)
  assert not missing, f"{package.__name__}: not in docs/api/*.md: {missing}"


def test_api_entries_name_real_objects():
  for name in DOCUMENTED:
    module, _, attribute = name.rpartition(".")
    target = __import__(module, fromlist=[attribute]) if module else None
    assert target is not None and hasattr(target, attribute), f"docs/api names {name}"


def test_every_command_has_its_help_on_the_cli_page():
  page = (DOCS / "api" / "cli.md").read_text()
  shown = set(re.findall(r"^```\{cli-help\} ?(.*)$", page, re.M))
  expected = {""} | set(EXPERIMENTS) | {f"bench {name}" for name in cli.BENCHMARKS} | set(cli.TOOLS)
  assert shown == expected


def test_every_experiment_has_a_section():
  page = (DOCS / "api" / "experiments.md").read_text()
  for name, module in EXPERIMENTS.items():
    assert f".. automodule:: {module.__name__}" in page, name

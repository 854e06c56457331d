"""``cli-help`` directive: the ``--help`` text of a ``gapmmd`` command, taken from the parser.

Usage in MyST: a ``{cli-help}`` fence with the words after ``gapmmd`` (none: the top level).
The text is produced at build time, so the page always matches the installed CLI.
"""

from __future__ import annotations

import contextlib
import io
import os

from docutils import nodes
from sphinx.util.docutils import SphinxDirective


def help_text(words: list[str]) -> str:
  """What ``gapmmd WORDS --help`` prints, 100 columns wide."""
  from gapmmd_jax import cli

  previous = os.environ.get("COLUMNS")
  os.environ["COLUMNS"] = "100"
  out = io.StringIO()
  try:
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
      cli.main([*words, "--help"])
  finally:
    if previous is None:
      del os.environ["COLUMNS"]
    else:
      os.environ["COLUMNS"] = previous
  text = out.getvalue()
  if not text.strip():
    raise ValueError(f"`gapmmd {' '.join(words)} --help` printed nothing.")
  return text


class CliHelp(SphinxDirective):
  optional_arguments = 4
  has_content = False

  def run(self) -> list[nodes.Node]:
    text = help_text(list(self.arguments))
    block = nodes.literal_block(text, text)
    block["language"] = "text"
    return [block]


def setup(app):
  app.add_directive("cli-help", CliHelp)
  return {"parallel_read_safe": True, "parallel_write_safe": True}

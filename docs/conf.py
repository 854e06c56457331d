"""Sphinx configuration: the API reference from the docstrings, executed tutorials (myst-nb).

Build (warnings are errors): ``sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

import os
import pathlib
import sys

import gapmmd_jax

sys.path.insert(0, str(pathlib.Path(__file__).parent / "_ext"))
# The tutorials' kernels inherit this: figures render inline on the page even where the
# environment (CI) sets MPLBACKEND=Agg.
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"

project = "gapmmd-jax"
author = "the gapmmd-jax developers"
copyright = "2026, the gapmmd-jax developers"
release = version = gapmmd_jax.__version__

extensions = [
  "sphinx.ext.autodoc",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
  "sphinx.ext.viewcode",
  "sphinx-mathjax-offline",  # MathJax served from _static: formulas render without a network
  "myst_nb",
  "cli_help",
]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
source_suffix = {".md": "myst-nb", ".rst": "restructuredtext"}

html_theme = "furo"
html_title = f"gapmmd-jax {version}"

# Docstrings are Google style with shapes in the text; type hints go beside each argument.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True
# Keep the alias instead of its eight-member expansion in every signature.
autodoc_type_aliases = {"jax.typing.ArrayLike": "jax.typing.ArrayLike"}

myst_enable_extensions = ["dollarmath", "colon_fence"]
# Heading anchors, so that links such as summary.md#metric-survey resolve (as on GitHub).
myst_heading_anchors = 3

# Tutorials run on every build; a failing cell fails the build.
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_timeout = 600
nb_merge_streams = True

# Every cross-reference to a gapmmd_jax name must resolve (nitpicky); names of other
# libraries and builtins in the signatures are not linked (no intersphinx offline).
nitpicky = True
nitpick_ignore_regex = [
  (r"py:.*", r"(jax|jnp|np|numpy|optax|flax|nnx|typing|collections|argparse|pathlib)(\..*)?"),
  (r"py:.*", r"(int|float|str|bool|tuple|list|dict|None|Callable|Any|Literal|Sequence)"),
  (
    r"py:.*",
    r"(ArrayLike|Array|PRNGKey|'jax\.typing\.ArrayLike'|TypeAliasForwardRef|os\.PathLike)",
  ),
]

"""Sphinx configuration of aevb's documentation site (``make docs``; CI builds it with
warnings as errors)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

project = "aevb"
author = "the aevb developers"
copyright = "2026, the aevb developers"
release = version = "0.1.0"

extensions = [
    "myst_nb",  # Markdown pages (MyST) and the notebooks, executed at build time
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]
html_theme = "furo"
html_title = "aevb"
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]  # pages whose first heading is not level 1 (notebooks)

# the notebooks: copied in from notebooks/ and executed with their small settings
nb_execution_mode = "force"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
os.environ.setdefault("AEVB_SMALL", "1")

autosummary_generate = True
autosummary_imported_members = False
# each name documented where it is defined (packages re-export their modules' names)
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_mock_imports = ["ray", "mlflow"]


def _copy_notebooks(app) -> None:
    """``notebooks/*.ipynb`` -> ``docs/tutorials/`` (the notebooks stay where users open
    them; the site executes copies)."""
    target = DOCS / "tutorials"
    target.mkdir(exist_ok=True)
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        shutil.copyfile(notebook, target / notebook.name)


def _require_docstrings(app, what, name, obj, options, lines) -> None:
    """A public class or function without a docstring fails the build (with -W)."""
    module = getattr(obj, "__module__", None) or ""
    defined_here = what == "module" or name == f"{module}.{getattr(obj, '__qualname__', '')}"
    if not (module.startswith("aevb") and defined_here):
        return  # documented where it is defined, or not ours
    if what in ("class", "function", "module") and not any(line.strip() for line in lines):
        from sphinx.util import logging

        logging.getLogger(__name__).warning(f"{what} {name} has no docstring",
                                            type="aevb", subtype="docstring")


def setup(app):
    app.connect("builder-inited", _copy_notebooks)
    app.connect("autodoc-process-docstring", _require_docstrings)

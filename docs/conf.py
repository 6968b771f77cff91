"""Sphinx configuration for poolx's documentation (``python3 dev.py docs``)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import poolx  # noqa: E402  (after the path is set)

project = "poolx"
author = "poolx maintainers"
copyright = "2026, poolx maintainers"
release = version = poolx.__version__
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]
intersphinx_mapping = {}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
nitpicky = False
exclude_patterns = ["_build"]

# furo is made for reading code: code blocks scroll sideways instead of being
# cut off, signatures wrap, and the page has a table of contents beside it.
html_theme = "furo"
html_title = f"poolx {release}"
pygments_style = "friendly"
pygments_dark_style = "monokai"

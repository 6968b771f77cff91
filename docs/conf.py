"""Sphinx configuration for poolx's documentation."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "poolx"
author = "poolx maintainers"
copyright = "2026, poolx maintainers"
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
html_theme = "alabaster"
exclude_patterns = ["_build"]

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

# Every parameter a reader can see is described.  autodoc lists each
# parameter of a documented callable with its type; one that has no words is
# an undocumented parameter, and with -W the build fails on it.  A class
# documented with an empty signature (``.. autoclass:: X()``: the pool
# creates it, users do not) shows no constructor parameters at all.
autodoc_typehints_description_target = "all"

# Not described yet (the parameters are self-explanatory to a backend author
# but have no words): the storage-backend contract and its implementations,
# the serializers, the adapter's and the CLI's helpers.  Describe them in the
# docstrings, then delete the line.
_NOT_YET_DESCRIBED = (
    "poolx.queue.base.AbstractTaskQueue.",
    "poolx.queue.memory.TaskQueue",
    "poolx.queue.redis.TaskQueue",
    "poolx.queue.redis.default_redis_factory",
    "poolx.queue.registry.BackendRegistry",
    "poolx.serialization.",
    "poolx.consumer.run_task",
    "poolx.pool.process.PopenProcess",
    "poolx.cli.main",
)


def _described_parameters(app, domain, objtype, contentnode):
    import re

    from docutils import nodes
    from sphinx import addnodes
    from sphinx.util import logging

    if domain != "py":
        return
    desc = contentnode.parent
    signatures = [n for n in desc.children if isinstance(n, addnodes.desc_signature)]
    shows_parameters = any(n.next_node(addnodes.desc_parameter) for n in signatures)
    field_lists = [n for n in contentnode.children if isinstance(n, nodes.field_list)]
    # The prose may describe a parameter too ("waits ``timeout`` seconds").
    prose = " ".join(n.astext() for n in contentnode.children
                     if not isinstance(n, (nodes.field_list, addnodes.desc)))
    for field_list in field_lists:
        for field in list(field_list.children):
            name = field[0].astext()
            kind, _, param = name.partition(" ")
            if kind not in {"param", "type"} or field[1].astext().strip():
                continue
            if shows_parameters and re.search(rf"\b{re.escape(param.lstrip('*'))}\b", prose):
                continue
            if not shows_parameters:
                field_list.remove(field)
            elif kind == "param":
                first = signatures[0] if signatures else {}
                fullname = f"{first.get('module', '?')}.{first.get('fullname', '?')}"
                if fullname.startswith(_NOT_YET_DESCRIBED):
                    continue
                logging.getLogger(__name__).warning(
                    "%s: parameter %r is not described", fullname, param.lstrip("*"),
                    location=desc)


def setup(app):
    app.connect("object-description-transform", _described_parameters, priority=900)

"""The worker process: what a spawned worker loads."""

from __future__ import annotations

import multiprocessing

import poolx
from tests.engine import helpers

# What a worker runs: its loop, the framing, pickling, memory checks and the
# exceptions it raises — and the two packages around them, whose __init__
# modules import nothing.
WORKER_MODULES = [
    "poolx",
    "poolx.engine",
    "poolx.engine.memory",
    "poolx.engine.pickling",
    "poolx.engine.wire",
    "poolx.engine.worker",
    "poolx.exceptions",
]


def test_a_spawned_worker_imports_only_what_it_runs():
    with poolx.Pool(1, context=multiprocessing.get_context("spawn")) as pool:
        assert pool.apply(helpers.loaded_poolx_modules) == WORKER_MODULES

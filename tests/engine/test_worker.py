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
    "poolx.engine.payload",
    "poolx.engine.pickling",
    "poolx.engine.wire",
    "poolx.engine.worker",
    "poolx.exceptions",
]


def test_a_spawned_worker_imports_only_what_it_runs():
    with poolx.Pool(1, context=multiprocessing.get_context("spawn")) as pool:
        assert pool.apply(helpers.loaded_poolx_modules) == WORKER_MODULES


def test_a_pool_user_pays_for_neither_concurrent_futures_nor_logging():
    """WorkerLostError and BrokenPoolError are also concurrent.futures'
    BrokenProcessPool, created on first use: a pool that never fails must
    not import concurrent.futures (nor logging, which it pulls in)."""
    import subprocess
    import sys

    code = ("import sys, poolx\n"
            "with poolx.Pool(1) as p:\n"
            "    assert p.apply(abs, (-3,)) == 3\n"
            "print(sorted(m for m in ('concurrent.futures', 'logging') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr

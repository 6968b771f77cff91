"""Fixtures for the worker-pool tests: isolated ``memory://`` URLs and pools
that always stop."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest

from poolx.core import get_broker
from poolx.pool.process import WorkerPool, default_context

CONTEXT = default_context()
"""The start method of the pools of these tests: WorkerPool's own default
(forkserver).  Not fork: the pool's process logs from several threads, and a
worker forked while one of them held a stream's lock hangs on its first log
line (the reason WorkerPool does not default to fork); with pytest capturing
output that happens often enough to make tests flaky."""


@pytest.fixture
def url() -> Iterator[str]:
    url = f"memory://worker-test-{uuid4().hex}"
    yield url
    get_broker(url).discard_pending_tasks()


@pytest.fixture
def start_pool() -> Iterator:
    """``start_pool(broker, init, **kw)`` → a started WorkerPool (fork, quick
    polling), stopped at teardown."""
    pools: list[WorkerPool] = []

    def start(broker, init_func, *args, poll: float = 0.2, **kw) -> WorkerPool:
        kw.setdefault("workers", 2)
        kw.setdefault("context", CONTEXT)
        pool = WorkerPool(broker, init_func, *args, **kw)
        pool.start(timeout=poll, handle_sigterm=False)
        pools.append(pool)
        return pool

    yield start
    for pool in pools:
        pool.terminate()  # a no-op for a pool the test stopped

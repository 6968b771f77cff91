"""Fixtures for the worker-pool tests: isolated ``memory://`` URLs and pools
that always stop.  Pools run under the fork start method (fast)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from uuid import uuid4

import pytest

from poolx.core import get_broker
from poolx.pool.process import WorkerPool

FORK = multiprocessing.get_context("fork")


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
        kw.setdefault("context", FORK)
        pool = WorkerPool(broker, init_func, *args, **kw)
        pool.start(timeout=poll, handle_sigterm=False)
        pools.append(pool)
        return pool

    yield start
    for pool in pools:
        pool.terminate()  # a no-op for a pool the test stopped

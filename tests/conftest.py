"""Suite-wide fixtures and helpers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

_NEVER = threading.Event()


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01) -> object:
    """Bounded polling: return the first truthy value of ``predicate``, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        _NEVER.wait(interval)  # a bounded pause between polls, not a synchronization


def default_sigint() -> None:
    """``preexec_fn`` for a child that must get KeyboardInterrupt on SIGINT
    (as a program started from a terminal does) even where this suite runs
    with SIGINT ignored — a job a shell started in the background — since
    Python installs no KeyboardInterrupt handler for an ignored SIGINT."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


# -- Redis --------------------------------------------------------------------
# One private redis-server per test session (see tests/redis_server.py), or
# the server named by POOLX_TEST_REDIS_URL.  Tests isolate themselves with a
# fresh key prefix per test, so they never need FLUSHALL.

import os  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402

from tests import redis_server as _redis  # noqa: E402


@pytest.fixture(scope="session")
def redis_server() -> Iterator[object]:
    """The session's Redis: ``.url`` (and ``.unix_url`` for a private one)."""
    external = os.environ.get(_redis.ENV_URL)
    if external:
        yield SimpleNamespace(url=external, unix_url=None)
        return
    server = _redis.RedisServer(_redis.require_redis_server()).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[object]:
    """A private three-node Redis Cluster for the session (``.url``, a
    ``redis+cluster://`` URL), see tests/redis/cluster.py."""
    from tests.redis.cluster import LocalCluster

    cluster = LocalCluster().start()
    try:
        yield cluster
    finally:
        cluster.cleanup()

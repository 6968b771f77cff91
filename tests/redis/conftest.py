"""Fixtures for the Redis-only tests.

``url`` is a fresh key prefix on the session's redis-server (cleaned up
afterwards); ``private_redis(...)`` starts a server of the test's own, for
tests that kill, restart or password-protect it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from poolx.core import get_broker
from tests import redis_server as servers
from tests.taskqueue.conftest import delete_prefix, isolated_url

pytestmark = pytest.mark.redis


@pytest.fixture
def url(redis_server) -> Iterator[str]:
    url = isolated_url(redis_server.url)
    yield url
    get_broker(url).discard_pending_tasks()
    delete_prefix(url)


@pytest.fixture
def private_redis() -> Iterator[Callable[..., servers.RedisServer]]:
    """``private_redis(persistent=False, password=None)`` → a started server,
    killed and removed at teardown."""
    started: list[servers.RedisServer] = []

    def start(**kw) -> servers.RedisServer:
        server = servers.RedisServer(servers.require_redis_server(), **kw)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.cleanup()

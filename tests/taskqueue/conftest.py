"""Fixtures for the task-queue suite.

Every test that takes the ``url`` fixture runs once per backend URL in
:data:`BROKER_URLS`.  A backend joins the suite by adding its URL here and,
if it needs to, a branch in :func:`isolated_url` so that tests share no
state.  ``redis://`` stands for the session's private redis-server (see
``tests/redis_server.py``) and ``redis+cluster://`` for the session's
private three-node cluster (``tests/redis/cluster.py``); each test gets its
own key prefix on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest

from poolx.core import get_broker

BROKER_URLS = [
    "memory://",
    pytest.param("redis://", marks=pytest.mark.redis, id="redis://"),
    pytest.param("redis+cluster://", marks=pytest.mark.redis, id="redis+cluster://"),
]


def isolated_url(base: str) -> str:
    """A URL for one test whose queues no other test touches."""
    if base.startswith("memory://"):
        return f"memory://test-{uuid4().hex}"
    if base.startswith(("redis://", "rediss://", "unix://", "redis+cluster://")):
        sep = "&" if "?" in base else "?"
        return f"{base}{sep}prefix=test-{uuid4().hex[:12]}"
    return base


def delete_prefix(url: str) -> None:
    """Remove every key a Redis test left behind (its prefix is its own)."""
    queue = get_broker(url).taskqueue
    client = queue.client
    keys = list(client.scan_iter(match=f"{queue.prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    queue.close()


@pytest.fixture(params=BROKER_URLS)
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A backend URL (one run per entry of BROKER_URLS), isolated per test."""
    base = request.param
    if base == "redis://":
        base = request.getfixturevalue("redis_server").url
    elif base == "redis+cluster://":
        base = request.getfixturevalue("redis_cluster").url
    url = isolated_url(base)
    yield url
    get_broker(url).discard_pending_tasks()
    if not url.startswith("memory://"):
        delete_prefix(url)

"""Fixtures for the task-queue suite.

Every test that takes the ``url`` fixture runs once per backend URL in
:data:`BROKER_URLS`.  A backend joins the suite by adding its URL here (the
Redis backend adds ``redis://...``) and, if it needs to, a branch in
:func:`isolated_url` so that tests share no state.
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest

from poolx.core import get_broker

BROKER_URLS = [
    "memory://",
]


def isolated_url(base: str) -> str:
    """A URL for one test whose queues no other test touches."""
    if base.startswith("memory://"):
        return f"memory://test-{uuid4().hex}"
    return base


@pytest.fixture(params=BROKER_URLS)
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A backend URL (one run per entry of BROKER_URLS), isolated per test."""
    url = isolated_url(request.param)
    yield url
    get_broker(url).discard_pending_tasks()

"""Task options timeout, soft_timeout and memory_limit (poolx, beyond WorQ)."""

from __future__ import annotations

import pytest

from poolx import Task, get_queue
from poolx.core import get_broker


def test_limits_are_stored_and_exposed(url):
    q = get_queue(url)
    task = Task(q.func, timeout=10, soft_timeout=5.5, memory_limit="1.5MiB")
    assert task.options == {"timeout": 10, "soft_timeout": 5.5, "memory_limit": 1572864}
    broker = get_broker(url)
    res = task()
    taken = broker.next_task(timeout=1)
    assert taken.id == res.id
    assert (taken.timeout, taken.soft_timeout, taken.memory_limit) == (10, 5.5, 1572864)


def test_limits_default_to_none(url):
    get_queue(url).func()
    taken = get_broker(url).next_task(timeout=1)
    assert (taken.timeout, taken.soft_timeout, taken.memory_limit) == (None, None, None)
    assert Task(get_queue(url).func).options == {}


def test_queue_default_options(url):
    q = get_queue(url, timeout=3, memory_limit=1000)
    q.func()
    taken = get_broker(url).next_task(timeout=1)
    assert (taken.timeout, taken.memory_limit) == (3, 1000)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"timeout": 0}, "invalid timeout: 0"),
        ({"timeout": -1}, "invalid timeout: -1"),
        ({"timeout": "10"}, "invalid timeout: '10'"),
        ({"timeout": True}, "invalid timeout: True"),
        ({"soft_timeout": 0}, "invalid soft_timeout: 0"),
        ({"soft_timeout": [1]}, r"invalid soft_timeout: \[1\]"),
        ({"memory_limit": 0}, "invalid memory_limit: 0"),
        ({"memory_limit": "lots"}, "invalid memory_limit: 'lots'"),
        ({"memory_limit": "10XB"}, "invalid memory_limit: '10XB'"),
        ({"memory_limit": True}, "invalid memory_limit: True"),
    ],
)
def test_invalid_limits(url, options, message):
    with pytest.raises(ValueError, match=message):
        Task(get_queue(url).func, **options)
    with pytest.raises(ValueError, match=message):
        get_queue(url, **options)


def test_with_options_replaces_limits(url):
    task = Task(get_queue(url).func, timeout=1)
    assert task.with_options({"soft_timeout": 2}).options == {"soft_timeout": 2}

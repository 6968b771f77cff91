"""What only the memory:// backend promises: stores by URL, result expiry."""

from __future__ import annotations

import threading

import pytest

from poolx import get_broker, get_queue
from poolx.const import TASK_EXPIRED
from poolx.queue import memory
from poolx.task import Deferred, FunctionTask, Task, TaskExpired

from .conftest import isolated_url
from .helpers import WAIT


@pytest.fixture
def url():
    """This module is about memory:// only."""
    return isolated_url("memory://")


def test_same_url_and_name_share_one_queue(url):
    a = get_broker(url).taskqueue
    assert get_broker(url).taskqueue is a
    assert get_queue(url) != get_queue(url)  # different brokers...
    assert get_broker(url, "other").taskqueue is not a  # ...named queues differ
    assert get_broker(url + "-elsewhere").taskqueue is not a
    assert isinstance(a, memory.TaskQueue)
    assert repr(a) == f"<poolx.queue.memory.TaskQueue {url} [default]>"


def test_store_outlives_every_broker(url):
    # Nothing enqueued is lost because the producer's objects went away.
    Task(get_queue(url).func, id="kept")()
    assert get_broker(url).next_task(WAIT).id == "kept"


def test_trailing_slash_names_the_same_store():
    assert get_broker("memory://").taskqueue is get_broker("memory:///").taskqueue


def test_all_blocked_waiters_receive_the_result(url):
    broker = get_broker(url)
    queue = broker.taskqueue
    queue.enqueue_task(Deferred(broker, FunctionTask("t", (), {}, {"id": "r"})), b"m")
    queue.get(WAIT)
    results = []
    ready = threading.Barrier(4)

    def wait():
        ready.wait(WAIT)
        results.append(queue.pop_result("r", WAIT))

    waiters = [threading.Thread(target=wait) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    ready.wait(WAIT)
    queue.set_result("r", b"v", WAIT)
    for waiter in waiters:
        waiter.join(WAIT)
    # Each waiter either blocked and got it, or came late and learned it is gone.
    assert len(results) == 3
    assert b"v" in results and set(results) <= {b"v", TASK_EXPIRED}


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now

    def time(self):
        return 1.7e9 + self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(memory, "time", fake)
    return fake


def test_unread_results_expire_after_result_timeout(clock, url):
    broker = get_broker(url)
    queue = broker.taskqueue
    res = Task(broker.queue().func, result_timeout=60)()
    broker.set_result(broker.next_task(WAIT), "value")
    clock.now += 59
    assert queue.get_status(res.id) == "completed"
    clock.now += 2
    assert queue.get_status(res.id) is None
    assert queue.pop_result(res.id, 0) is TASK_EXPIRED
    with pytest.raises(TaskExpired):
        res.wait(0) and res.value


def test_pending_tasks_never_expire(clock, url):
    res = get_queue(url).func()
    clock.now += 10**9
    assert res.status == "enqueued"

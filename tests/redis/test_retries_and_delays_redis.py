"""Delayed tasks and retries on Redis under faults: a consumer killed during a
retry's back-off, and Redis restarted with scheduled tasks stored; plus the
Redis-side bookkeeping (the wake-up marker is not a task)."""

from __future__ import annotations

import signal
import time

import pytest

from poolx import Task, get_broker, get_queue
from poolx.core import batch
from poolx.task import Retry, wait_all
from tests.conftest import wait_until
from tests.redis.tasks import ts
from tests.redis.test_delivery import _consumer
from tests.taskqueue.conftest import isolated_url
from tests.taskqueue.helpers import WAIT, thread_worker


def test_consumer_killed_during_a_retry_back_off_the_task_still_runs(url, tmp_path):
    path = str(tmp_path / "ran")
    q = get_queue(url)
    res = Task(q.rt.fail_once, retry=Retry(max=2, delay=1.0, jitter=False))(path)
    doomed = _consumer(url, 1, {})
    try:
        # The first attempt failed and the retry waits in Redis, not in the consumer.
        wait_until(lambda: res.status == "scheduled", timeout=WAIT)
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(WAIT)
    broker = get_broker(url)
    broker.expose(ts)
    with thread_worker(broker):
        assert res.wait(WAIT) and res.value == path
    with open(path) as fh:
        assert fh.read() == "ran"


def test_scheduled_tasks_survive_a_redis_restart(private_redis):
    server = private_redis(persistent=True)
    url = isolated_url(server.url)
    q = get_queue(url)
    start = time.time()
    with batch(q):
        results = [Task(q.rt.clock, delay=1.5)(f"t{i}") for i in range(50)]
    later = Task(q.rt.clock, delay=1.5)("one by one")
    assert get_broker(url).taskqueue.scheduled_size() == 51
    server.restart()  # kill -9, then the same port and data again
    broker = get_broker(url)
    assert broker.taskqueue.scheduled_size() == 51
    broker.expose(ts)
    with thread_worker(broker, workers=2):
        assert wait_all([*results, later], timeout=WAIT * 3)
    ran = [res.value for res in [*results, later]]
    assert sorted(tag for tag, _ in ran) == sorted([f"t{i}" for i in range(50)] + ["one by one"])
    assert min(when for _, when in ran) >= start + 1.5
    assert broker.taskqueue.scheduled_size() == 0


def test_the_wake_up_marker_is_not_a_task(url):
    broker = get_broker(url)
    queue = broker.taskqueue
    q = broker.queue()
    Task(q.rt.square, delay=60)(1)  # scheduled on an empty ready list: it rings
    assert queue.client.exists(queue._key + "bell")
    assert len(q) == 0 and queue.queued_tasks(10) == []
    assert queue.get(0) is None  # the fetch takes the marker, not a task
    assert not queue.client.exists(queue._key + "bell")
    Task(q.rt.square, delay=60)(2)  # not due before the other: no ring
    assert not queue.client.exists(queue._key + "bell")
    del q[:]
    assert queue.scheduled_size() == 0
    assert not queue.client.exists(queue._key + "sched", queue._key + "ready",
                                   queue._key + "bell")


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_retry_policy_travels_with_every_serializer(url, serializer, tmp_path):
    url = f"{url}&serializer={serializer}"
    broker = get_broker(url)
    broker.expose(ts)
    q = broker.queue()
    with thread_worker(broker):
        res = Task(q.rt.fail_once, retry=Retry(max=1, delay=0.05))(str(tmp_path / "ran"))
        assert res.wait(WAIT)
    assert res.value == str(tmp_path / "ran")


def test_a_retry_counts_deliveries_afresh(url):
    from tests.redis.test_delivery import expire_leases

    broker = get_broker(url)
    queue = broker.taskqueue
    res = Task(get_queue(url).rt.square, max_retries=1)(3)
    assert queue.get(WAIT).attempt == 1
    expire_leases(queue)
    item = queue.get(WAIT)
    assert item.attempt == 2  # one redelivery used: max_retries=1 is reached
    assert queue.retry_task(res.id, item[1], 0.05)
    assert not queue.retry_task(res.id, item[1], 0.05)  # not processing any more
    assert res.status == "scheduled"
    again = queue.get(WAIT)
    assert again[0] == res.id and again.attempt == 1 and again.failure is None


def test_the_example_prints_the_same_on_redis(url):
    """examples/taskqueue/retries_and_delays.py with a Redis URL: the output
    its page shows for memory:// (tests/test_docs.py runs that one)."""
    from tests.test_docs import assert_example_prints_the_same_on

    assert_example_prints_the_same_on("retries-and-delays.rst", url)


def test_a_delay_inside_a_batch_counts_from_the_call_not_the_flush(url):
    """A producer busy for a while inside ``batch()``: the delay it asked
    for started at its call (it started at the flush, so the task ran that
    much later than asked)."""
    import threading

    q = get_queue(url)
    taskqueue = get_broker(url).taskqueue
    with batch(q):
        res = Task(q.rt.clock, delay=1.0)("late")
        threading.Event().wait(1.2)  # the producer's own work, not a synchronization
    due_ms = taskqueue.client.zscore(taskqueue._key + "sched", "t" + res.id)
    seconds, micros = taskqueue.client.time()
    assert due_ms is not None and due_ms - (seconds * 1000 + micros // 1000) < 500

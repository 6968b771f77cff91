"""Reading results through Deferreds, the same on every backend: several
threads waiting at once, timeouts, expired tasks, Deferreds dropped or
pickled before their result arrives (``redis://`` reads results ahead into
a cache; none of that may show here)."""

from __future__ import annotations

import gc
import pickle
import threading
import time

import pytest

from poolx import Task, get_broker
from poolx.task import TaskExpired
from tests.conftest import wait_until

from .helpers import WAIT, thread_worker, value_of


def double(x):
    return 2 * x


def doubling(url):
    """A broker that exposes ``double``, and a queue on it."""
    broker = get_broker(url)
    broker.expose(double)
    return broker, broker.queue()


def run_all(broker) -> None:
    """Run every queued task in this thread (no worker pool)."""
    while (task := broker.next_task(0)) is not None:
        broker.invoke(task)
    flush = getattr(broker.taskqueue, "flush", None)
    if flush is not None:
        flush()


def test_each_waiting_thread_gets_its_own_results_exactly_once(url):
    broker, q = doubling(url)
    results = [q.double(i) for i in range(240)]
    got: dict[int, list] = {k: [] for k in range(6)}
    start = threading.Barrier(7)

    def wait(k):
        start.wait(WAIT)
        for res in results[k::6]:
            assert res.wait(WAIT)
            got[k].append(res.value)

    threads = [threading.Thread(target=wait, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    worker = get_broker(url)
    worker.expose(double)
    with thread_worker(worker, workers=2):
        start.wait(WAIT)
        for thread in threads:
            thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)
    for k in range(6):
        assert got[k] == [2 * i for i in range(k, 240, 6)]
    assert getattr(broker.taskqueue, "_cache", {}) == {}


def test_wait_timeout_is_kept_to_a_few_milliseconds(url):
    """(Redis itself ends a blocking call only at its next tick, up to 100 ms
    after its timeout.)"""
    q = get_broker(url).queue()
    res = q.double(1)
    late = []
    for timeout in (0.15, 0.05, 0.3, 0.05, 0.15):
        began = time.monotonic()
        assert not res.wait(timeout)
        late.append(time.monotonic() - began - timeout)
    assert min(late) >= 0
    assert sorted(late)[len(late) // 2] < 0.02, late  # the median: the machine may be busy


def test_wait_timeout_is_kept_while_another_thread_waits(url):
    broker = get_broker(url)
    q = broker.queue()
    first, second = q.double(1), q.double(2)
    waiting = threading.Thread(target=first.wait, args=(3,))
    waiting.start()  # blocks in the backend for the first result
    try:
        for timeout in (0.2, 0.05):
            began = time.monotonic()
            assert not second.wait(timeout)
            elapsed = time.monotonic() - began
            assert timeout <= elapsed < timeout + 0.1, elapsed
    finally:
        broker.expose(double)
        run_all(broker)
        waiting.join(WAIT)
    assert first.value == 2 and second.value == 4


def test_an_expired_task_is_reported_to_its_waiter(url):
    broker, q = doubling(url)
    gone, kept = q.double(1), q.double(2)
    broker.task_failed(gone)
    run_all(broker)
    assert kept.wait(WAIT) and kept.value == 4  # (may read the other ahead)
    assert gone.wait(0)
    with pytest.raises(TaskExpired):
        value_of(gone)


def test_an_unread_result_expires_after_its_result_timeout(url):
    broker, q = doubling(url)
    res = Task(q.double, result_timeout=0.3)(5)
    run_all(broker)
    wait_until(lambda: broker.taskqueue.get_status(res.id) is None, timeout=WAIT)
    assert res.wait(0)
    with pytest.raises(TaskExpired):
        value_of(res)


def test_a_result_whose_deferred_was_dropped_stays_for_other_readers(url):
    broker, q = doubling(url)
    dropped = q.double(3)
    dropped_id, dropped_task = dropped.id, dropped.task
    del dropped
    gc.collect()
    other = q.double(4)
    run_all(broker)
    assert other.wait(WAIT) and other.value == 8
    assert dropped_id not in getattr(broker.taskqueue, "_cache", {})
    assert broker.taskqueue.get_status(dropped_id) == "completed"
    assert get_broker(url).pop_result(dropped_task, WAIT) == 6


def test_a_pickled_deferred_leaves_its_result_to_the_copy(url):
    broker, q = doubling(url)
    shared, mine = q.double(5), q.double(6)
    data = pickle.dumps(shared)
    run_all(broker)
    assert mine.wait(WAIT) and mine.value == 12  # must not take the shared one
    copy = pickle.loads(data)
    assert copy.wait(WAIT) and copy.value == 10


def test_a_deferred_pickled_after_its_result_was_read_ahead_carries_it(url):
    broker, q = doubling(url)
    shared, mine = q.double(7), q.double(8)
    run_all(broker)
    assert mine.wait(WAIT)  # on redis://, reads the other result ahead too
    copy = pickle.loads(pickle.dumps(shared))
    assert copy.wait(WAIT) and copy.value == 14


def add(x, y):
    return x + y


def test_a_result_read_ahead_can_still_be_passed_as_an_argument(url):
    broker = get_broker(url)
    broker.expose(double)
    broker.expose(add)
    q = broker.queue()
    first, second = q.double(1), q.double(2)
    run_all(broker)
    assert second.wait(WAIT)  # on redis://, reads the first result ahead
    total = q.add(first, second)
    run_all(broker)
    assert total.wait(WAIT) and total.value == 6
    assert first.value == 2

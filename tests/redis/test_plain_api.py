"""The plain WorQ API on Redis (``q.f(x)`` one by one, ``d.wait()`` one by
one): enqueue is one durable round trip per task, and waiting prefetches the
client's other finished results (issue 11); read results are deleted
(issue 18)."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from poolx import get_broker
from poolx.core import batch
from poolx.queue import redis as redis_queue
from poolx.queue.redis import POPPED_KEEP_MS
from poolx.task import TaskExpired, wait_all
from tests.redis.tasks import ts
from tests.taskqueue.helpers import WAIT, value_of


def get_worker(url):
    broker = get_broker(url)
    broker.expose(ts)
    return broker

ROOT = Path(__file__).resolve().parents[2]

PRODUCER = """
import sys
from poolx import get_queue
q = get_queue(sys.argv[1])
ids = [q.rt.square(i).id for i in range(int(sys.argv[2]))]
sys.stdout.write(" ".join(ids) + "\\n")
sys.stdout.flush()
sys.stdin.read()  # killed here: nothing after the calls returned may be needed
"""


def test_a_producer_killed_right_after_its_enqueue_calls_loses_nothing(url):
    """Enqueue is durable when the call returns: no buffer, no thread that
    would send the tasks later."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, url, "300"], cwd=ROOT, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": path},
    )
    try:
        assert proc.stdout is not None
        ids = proc.stdout.readline().split()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(WAIT)
    assert proc.returncode == -signal.SIGKILL
    assert len(ids) == 300
    queue = get_broker(url).taskqueue
    assert queue.size() == 300
    assert {queue.get_status(task_id.decode()) for task_id in ids} == {"enqueued"}


# -- result prefetch --------------------------------------------------------------


def _run_all(broker) -> None:
    while (task := broker.next_task(0)) is not None:
        broker.invoke(task)
    broker.taskqueue.flush()


def _counting(queue):
    calls: list[str] = []
    real = queue._call

    def call(what, *args):
        calls.append(what)
        return real(what, *args)

    queue._call = call
    return calls


def test_a_loop_of_waits_over_finished_tasks_costs_few_round_trips(url):
    broker = get_broker(url)
    broker.expose(ts)
    q = broker.queue()
    results = [q.rt.square(i) for i in range(300)]
    _run_all(get_worker(url))
    calls = _counting(broker.taskqueue)
    for res in results:
        assert res.wait(WAIT)
    assert calls == ["wait"]  # the first wait read them all
    assert [res.value for res in results] == [i * i for i in range(300)]
    assert {res.status for res in results} == {"success"}
    assert calls == ["wait"]
    assert broker.taskqueue._cache == {} and broker.taskqueue._subs == {}


def test_values_and_statuses_of_prefetched_results_cost_no_round_trip(url):
    broker = get_broker(url)
    q = broker.queue()
    first, second, third = q.rt.square(1), q.rt.square(2), q.rt.square(3)
    _run_all(get_worker(url))
    assert first.wait(WAIT)
    calls = _counting(broker.taskqueue)
    assert second.status == "success" and third.value == 9
    assert second.value == 4
    assert calls == []


def test_waiting_blocks_on_the_mailbox_until_a_result_arrives(url):
    broker = get_broker(url)
    q = broker.queue()
    res = q.rt.square(4)
    worker = get_worker(url)
    task = worker.next_task(WAIT)
    calls = _counting(broker.taskqueue)
    timer = threading.Timer(0.3, worker.set_result, (task, 16))
    timer.start()
    try:
        began = time.monotonic()
        assert res.wait(WAIT)
        assert time.monotonic() - began >= 0.25
    finally:
        timer.join()
    assert calls == ["wait", "wait"]  # before blocking, and once woken
    assert res.value == 16


def test_the_prefetch_cache_is_bounded(url, monkeypatch):
    monkeypatch.setattr(redis_queue, "PREFETCH_MAX", 50)
    monkeypatch.setattr(redis_queue, "PREFETCH_LIMIT", 20)
    broker = get_broker(url)
    q = broker.queue()
    results = [q.rt.square(i) for i in range(200)]
    _run_all(get_worker(url))
    sizes = []
    for res in results:
        assert res.wait(WAIT)
        sizes.append(len(broker.taskqueue._cache))
    assert max(sizes) <= 50
    assert [res.value for res in results] == [i * i for i in range(200)]


def test_a_full_cache_still_wakes_a_waiter_at_once(url, monkeypatch):
    monkeypatch.setattr(redis_queue, "PREFETCH_MAX", 3)
    broker = get_broker(url)
    q = broker.queue()
    done = [q.rt.square(i) for i in range(10)]
    worker = get_worker(url)
    _run_all(worker)
    assert done[0].wait(WAIT)  # the cache takes three, the mailbox keeps the rest
    waited = q.rt.square(10)
    task = worker.next_task(WAIT)
    threading.Timer(0.2, worker.set_result, (task, 100)).start()
    began = time.monotonic()
    assert waited.wait(WAIT) and waited.value == 100
    assert time.monotonic() - began < 2  # not a MAX_BLOCK round
    assert [res.value for res in done] == [i * i for i in range(10)]


# -- read results are deleted (issue 18) ------------------------------------------


def _records(queue) -> set[str]:
    return {key.decode().rsplit(":", 1)[1]
            for key in queue.client.scan_iter(match=f"{queue._key}t:*", count=1000)}


def test_results_read_through_the_mailbox_are_deleted_by_the_read(url):
    """The call that reads them deletes them; what it read stays in the
    mailbox's last list (for a retried call) only until the next read, or
    POPPED_KEEP_MS."""
    broker = get_broker(url)
    q = broker.queue()
    results = [q.rt.square(i) for i in range(50)]
    _run_all(get_worker(url))
    for res in results:
        assert res.wait(WAIT)
    queue = broker.taskqueue
    assert _records(queue) == set()
    last_key = f"{queue._key}mb:{queue._mailbox}:last"
    assert queue.client.llen(last_key) == 1 + 3 * 50  # the nonce, then (id, code, result)
    assert 0 < queue.client.pttl(last_key) <= POPPED_KEEP_MS
    last = q.rt.square(50)
    _run_all(get_worker(url))
    assert last.wait(WAIT) and last.value == 2500
    assert _records(queue) == set()
    assert queue.client.llen(last_key) == 1 + 3  # only what the last read took


def test_results_read_one_by_one_without_prefetch_are_deleted_too(url):
    queue = get_broker(url).taskqueue
    q = get_broker(url).queue()
    ids = [q.rt.square(i).id for i in range(3)]  # dropped: read by id below
    _run_all(get_worker(url))
    reader = get_broker(url).taskqueue
    assert [reader.pop_result(i, WAIT) for i in ids[:2]]
    assert _records(queue) == {ids[1], ids[2]}  # the second call deleted the first
    reader.pop_result(ids[2], WAIT)
    assert _records(queue) == {ids[2]}


def test_tasks_enqueued_in_a_batch_are_not_read_ahead(url):
    broker = get_broker(url)
    q = broker.queue()
    with batch(q):
        results = [q.rt.square(i) for i in range(5)]
    _run_all(get_worker(url))
    assert results[0].wait(WAIT)
    assert broker.taskqueue._cache == {}
    assert wait_all(results, WAIT)
    assert [res.value for res in results] == [i * i for i in range(5)]


# -- a stored result ends the task (issue 17) -------------------------------------


def test_a_task_whose_result_was_stored_is_never_delivered_again(url):
    """Its consumer may vanish at once: the lease went with the result, read
    or not, deleted or not."""
    q = get_broker(url).queue()
    stored, read, lost = q.rt.square(1), q.rt.square(2), q.rt.square(3)
    consumer = get_broker(url).taskqueue
    taken = [consumer.get(WAIT)[0] for _ in range(3)]
    assert taken == [stored.id, read.id, lost.id]
    for task_id in taken:
        consumer.set_task_timeout(task_id, 0.2)  # leases that end very soon
    consumer.set_result(stored.id, b"x", WAIT)
    consumer.set_result(read.id, b"y", WAIT)
    assert get_broker(url).taskqueue.pop_result(read.id, WAIT) == b"y"
    other = get_broker(url).taskqueue
    again = other.get(WAIT)  # wakes when the last lease is due
    assert again is not None and again[0] == lost.id and again.attempt == 2
    assert other.get(0.5) is None


def test_dropped_deferreds_leave_the_mailbox_with_the_next_enqueue(url):
    broker = get_broker(url)
    queue = broker.taskqueue
    q = broker.queue()
    dropped = q.rt.square(1)
    dropped_id = dropped.id
    del dropped
    gc.collect()
    assert list(queue._unsub) == [dropped_id]
    kept = q.rt.square(2)
    assert list(queue._unsub) == [] and kept.id in queue._subs
    assert queue.client.hget(f"{queue._key}t:{dropped_id}", "mb") is None


def test_a_result_read_by_another_reader_is_expired_for_the_prefetcher(url):
    broker = get_broker(url)
    q = broker.queue()
    taken, mine = q.rt.square(1), q.rt.square(2)
    _run_all(get_worker(url))
    assert get_broker(url).taskqueue.pop_result(taken.id, WAIT) == broker.serialize(1)
    assert mine.wait(WAIT) and mine.value == 4
    assert taken.id in broker.taskqueue._cache  # learnt in the same call
    assert taken.wait(0)
    with pytest.raises(TaskExpired):
        value_of(taken)


def test_a_retried_wait_call_gets_the_same_results_again(url):
    """A ``wait`` whose reply was lost is retried with the same nonce: it
    returns what the lost reply held, read results and mailbox alike."""
    broker = get_broker(url)
    queue = broker.taskqueue
    q = broker.queue()
    results = [q.rt.square(i) for i in range(3)]
    _run_all(get_worker(url))
    ids = [res.id for res in results]

    def wait(nonce):  # one script call, as the retry policy repeats it
        return queue._call("wait", nonce, POPPED_KEEP_MS, b"0", 0, queue._mailbox, 10, 0,
                           ids[0])

    first = wait(b"nonce-1")
    assert first[0] == [b"r", broker.serialize(0)]
    assert sorted(first[1][0::3]) == sorted(i.encode() for i in ids[1:])
    assert wait(b"nonce-1") == first  # the retry
    again = wait(b"nonce-2")  # anyone else: read already, mailbox empty
    assert again[0] == [b"x", b""] and again[1] == [] and again[2] == 0


def test_wait_all_over_plain_enqueued_tasks_drains_the_mailbox(url):
    """Else a producer that enqueues one by one and reads with wait_all
    would leave a mailbox entry per task in Redis until it expires."""
    broker = get_broker(url)
    queue = broker.taskqueue
    q = broker.queue()
    results = [q.rt.square(i) for i in range(300)]
    _run_all(get_worker(url))
    calls = _counting(queue)
    assert wait_all(results, WAIT)
    assert calls == ["wait"]
    assert [res.value for res in results] == [i * i for i in range(300)]
    assert queue.client.llen(f"{queue._key}mb:{queue._mailbox}") == 0


def test_a_status_poll_in_another_thread_never_steals_a_waiters_result(url):
    """One thread waits on task after task while another polls a Deferred
    that never finishes: a poll's call must not read the waiter's result
    ahead and leave the waiter with TaskExpired (it once did for about half
    of them)."""
    broker = get_broker(url)
    q = broker.queue()
    never = q.rt.square(-1)
    worker = get_worker(url)
    n = 60
    expired: list[int] = []
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            task = worker.next_task(0.2)
            if task is not None and task.id != never.id:
                worker.set_result(task, task.args[0] ** 2)

    def wait_each() -> None:
        try:
            for i in range(n):
                res = q.rt.square(i)
                assert res.wait(WAIT)
                if isinstance(res.received(), TaskExpired):
                    expired.append(i)
        finally:
            done.set()

    threads = [threading.Thread(target=serve), threading.Thread(target=wait_each)]
    for thread in threads:
        thread.start()
    while not done.is_set():
        bool(never)
    for thread in threads:
        thread.join(WAIT)
    assert expired == []

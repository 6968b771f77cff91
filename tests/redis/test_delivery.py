"""Reliable delivery on Redis: leases, redelivery, the retry limit, and
surviving a killed consumer or a restarted server."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from poolx import Task, get_broker, get_queue
from poolx.core import batch
from poolx.task import TaskFailure, wait_all
from tests.conftest import wait_until
from tests.redis.tasks import STUCK_ENV, ts
from tests.taskqueue.conftest import isolated_url
from tests.taskqueue.helpers import WAIT, thread_worker, value_of

ROOT = Path(__file__).resolve().parents[2]


def expire_leases(queue) -> list[bytes]:
    """Make every current lease of ``queue`` overdue (as if its consumer died
    long ago); returns the leased refs."""
    key = queue._key + "leases"
    refs = queue.client.zrange(key, 0, -1)
    if refs:
        queue.client.zadd(key, {ref: 0 for ref in refs})
    return refs


def lease_deadline(queue, ref: str) -> float | None:
    return queue.client.zscore(queue._key + "leases", ref)


def test_lost_consumer_task_is_delivered_again(url, caplog):
    broker = get_broker(url)
    res = get_queue(url).rt.square(7)
    first = broker.taskqueue.get(WAIT)  # a consumer takes it... and dies
    assert first[0] == res.id and first.attempt == 1
    assert broker.taskqueue.get(0) is None  # leased: nobody else gets it
    assert expire_leases(broker.taskqueue) == [b"t" + res.id.encode()]
    other = get_broker(url)  # another consumer
    other.expose(ts)
    with caplog.at_level(logging.WARNING):
        task = other.next_task(WAIT)
    assert task.id == res.id
    assert "queued again" in caplog.text and "delivery 2" in caplog.text
    other.invoke(task)
    assert res.wait(WAIT) and res.value == 49


def test_retry_limit_turns_the_next_loss_into_a_task_failure(url):
    broker = get_broker(url)
    queue = broker.taskqueue
    res = Task(get_queue(url).rt.square, max_retries=1)(3)
    for attempt in (1, 2):
        item = queue.get(WAIT)
        assert item.attempt == attempt and item.failure is None
        expire_leases(queue)
    assert broker.next_task(WAIT) is None  # third delivery: recorded as failed
    assert res.wait(WAIT)
    with pytest.raises(TaskFailure) as info:
        value_of(res)
    assert info.value.task_name == "rt.square" and info.value.task_id == res.id
    assert info.value.error.startswith("WorkerLost: the task was delivered 2 times")
    assert "max_retries=1" in info.value.error
    assert queue.get(0) is None and lease_deadline(queue, "t" + res.id) is None


def test_heartbeat_renews_the_lease_and_a_lost_lease_is_reported(url, caplog):
    broker = get_broker(url)
    queue = broker.taskqueue
    res = Task(get_queue(url).rt.square, heartrate=1)(2)
    task = broker.next_task(WAIT)
    ref = "t" + res.id
    before = lease_deadline(queue, ref)
    broker.heartbeat(task)  # lease = 2 * 1 + 5 s from now (server time)
    assert lease_deadline(queue, ref) >= before - 60_000 + 7000 - 1000
    expire_leases(queue)
    again = get_broker(url).taskqueue.get(WAIT)  # reclaimed by someone else
    assert again[0] == res.id and again.attempt == 2
    with caplog.at_level(logging.WARNING):
        broker.heartbeat(task)  # the first consumer's lease is gone
    assert "lost its lease" in caplog.text
    broker.set_result(task, 4)  # a late result still counts, once
    assert res.wait(WAIT) and res.value == 4


def test_ignore_result_task_is_leased_until_done(url):
    broker = get_broker(url)
    broker.expose(ts)
    queue = broker.taskqueue
    assert Task(get_queue(url).rt.square, ignore_result=True, id="fire")(5) is None
    task = broker.next_task(WAIT)
    assert queue.get_status("fire") is None  # the id is free again...
    assert Task(get_queue(url).rt.square, ignore_result=True, id="fire")(6) is None
    [ref] = [r for r in expire_leases(queue)]
    assert ref.startswith(b"f")  # ...because the taken record is detached
    # The lost delivery comes back (after the re-enqueued one, which is older
    # in the queue? no: reclaimed tasks go to the front).
    again = broker.next_task(WAIT)
    assert (again.id, again.args) == ("fire", (5,))
    broker.invoke(again)  # task_done: the lease is dropped
    newer = broker.next_task(WAIT)
    assert newer.args == (6,)
    broker.invoke(newer)
    broker.invoke(task)  # the first, lost delivery finishing late is harmless
    queue.flush()
    assert queue.client.zcard(queue._key + "leases") == 0
    assert queue.get(0) is None
    assert not [k for k in queue.client.scan_iter(match=queue._key + "f:*")]


def test_requeue_gives_a_taken_task_back_without_counting_a_delivery(url):
    broker = get_broker(url)
    queue = broker.taskqueue
    res = get_queue(url).rt.square(9)
    fire = Task(get_queue(url).rt.square, ignore_result=True)(10)
    assert fire is None
    taken = [queue.get(WAIT), queue.get(WAIT)]
    for item in taken:
        ignore = item[0] != res.id
        assert queue.requeue_task(item[0], item[1], ignore)
        assert not queue.requeue_task(item[0], item[1], ignore)  # not processing now
    again = sorted([queue.get(WAIT), queue.get(WAIT)])
    assert [item.attempt for item in again] == [1, 1]
    assert queue.client.zcard(queue._key + "leases") == 2


def _consumer(url: str, threads: int, env: dict[str, str]) -> subprocess.Popen[str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.redis.consumer_main", url, str(threads)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": path, **env},
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_kill_9_of_a_consumer_with_1000_tasks_in_flight_loses_nothing(url):
    q = get_queue(url, heartrate=0.2)  # lease: 2 * 0.2 + 5 s
    with batch(q):
        results = [q.rt.square(i) for i in range(1000)]
    # The doomed consumer: 4 threads; every 100th task hangs in it, so it
    # ends up holding tasks 99, 199, 299 and 399 while 600 wait.
    doomed = _consumer(url, 4, {STUCK_ENV: "100"})
    try:
        stuck = [results[i] for i in (99, 199, 299, 399)]
        wait_until(lambda: all(r.status == "processing" for r in stuck), timeout=WAIT)
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(WAIT)
    assert len(q) == 600
    broker = get_broker(url)
    broker.expose(ts)
    with thread_worker(broker, workers=2):
        assert wait_all(results, timeout=60)
    assert [r.value for r in results] == [i * i for i in range(1000)]
    assert [r.status for r in stuck] == ["success"] * 4


@pytest.mark.timeout(120)
def test_redis_restarted_mid_run_loses_nothing(private_redis, caplog):
    server = private_redis(persistent=True)
    url = isolated_url(server.url)
    broker = get_broker(url, retry_timeout=30)
    broker.expose(ts)
    q = get_queue(url, heartrate=0.2)
    results = []
    halfway = threading.Event()
    restarted = threading.Event()

    def produce():
        for i in range(600):
            results.append(q.rt.square(i))  # one round trip each: some hit the outage
            if i == 300:
                halfway.set()

    with caplog.at_level(logging.WARNING, logger="poolx.queue.redis"):
        with thread_worker(broker, workers=2):
            producer = threading.Thread(target=produce)
            producer.start()
            assert halfway.wait(WAIT)
            server.restart()  # kill -9, then the same port and data again
            restarted.set()
            producer.join(60)
            assert not producer.is_alive()
            assert wait_all(results, timeout=60)
    assert [r.value for r in results] == [i * i for i in range(600)]
    assert "unreachable" in caplog.text and "reconnected" in caplog.text


def test_redis_down_for_longer_than_retry_timeout_is_a_clear_error(private_redis):
    from poolx.queue.redis import RedisUnavailable

    server = private_redis()
    url = isolated_url(server.url)
    q = get_queue(url)
    q.rt.square(1)  # connected once
    broker = get_broker(url, retry_timeout=0.3)
    assert broker.taskqueue.ping()
    server.kill()
    with pytest.raises(RedisUnavailable, match=r"unreachable for 0 s \(enqueue not done\)"):
        Task(broker.queue().rt.square)(2)

"""An idle consumer costs Redis little (issue 18): blocking waits on the
ready list, the fetch script again only when a task shows up or a lease may
have expired; it still takes a task at once."""

from __future__ import annotations

import threading
import time

from poolx import get_queue
from poolx.core import get_broker
from poolx.queue.redis import IDLE_RECHECK


def _calls(client) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(stats["calls"])
            for name, stats in client.info("commandstats").items()}


def test_an_idle_fetch_runs_the_script_once(private_redis):
    server = private_redis()
    taskqueue = get_broker(server.url).taskqueue
    client = taskqueue.client
    assert IDLE_RECHECK > 6
    taskqueue.get_many(10, timeout=0)  # connected, script loaded
    before = _calls(client)
    started = time.monotonic()
    assert taskqueue.get_many(10, timeout=6) == []
    assert time.monotonic() - started >= 6
    after = _calls(client)
    # before: the script before each blocking call and after the last (3 runs)
    assert after["evalsha"] - before["evalsha"] == 1
    assert after["blmove"] - before.get("blmove", 0) <= 2  # max_block (5 s) at a time


def test_an_idle_fetch_takes_a_task_at_once(private_redis):
    server = private_redis()
    broker = get_broker(server.url)
    broker.taskqueue.get_many(1, timeout=0)
    got = []
    waiter = threading.Thread(target=lambda: got.extend(broker.taskqueue.get_many(5, timeout=30)))
    waiter.start()
    deadline = time.monotonic() + 10
    while "blmove" not in _calls(broker.taskqueue.client) and time.monotonic() < deadline:
        threading.Event().wait(0.01)  # bounded polling: the waiter is blocked in Redis
    res = get_queue(server.url).f(1)
    enqueued = time.monotonic()
    waiter.join(30)
    assert [item[0] for item in got] == [res.id]
    assert time.monotonic() - enqueued < 2

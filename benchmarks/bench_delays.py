"""Delayed tasks: how fast a due schedule is handed out, what a large schedule
costs ordinary enqueues, and how late a delayed task starts on an idle pool.

Run: ``python3 dev.py bench benchmarks/bench_delays.py`` (or directly with the
venv's python; ``--scheduled 20000`` for a quick run).  Redis figures use a
private ``redis-server`` (free loopback port, no persistence, killed at the
end), the same one for every measurement.

1. **Dispatch**: N tasks (default 100,000) scheduled with the same due time
   (``eta``), then taken by two consumers (threads, each with its own
   connection, taking up to 256 tasks per call as a busy worker pool does);
   the clock runs from the due time to the last task taken.  Baseline: the
   same N tasks enqueued ready, the clock from the consumers' start.  Target:
   >= 5,000 tasks/s, ratio near 1.
2. **Enqueue beside a schedule**: M ordinary tasks enqueued one call each
   (WorQ's plain API) and in batches, into a queue whose schedule holds N
   far-future tasks, against the same into an empty queue (ratio of rates;
   target: no more than 10 % slower, ratio >= 0.90).
3. **Lateness**: a task with ``delay=0.2`` on an idle thread WorkerPool,
   ``--lateness`` times per backend: how long after its due time it ran
   (median and max; the promise is 50 ms).

Each rate is the median of ``--rounds`` runs (default 4), with and without
interleaved round by round, in alternating order.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

from bench_queue import Server  # one private redis-server helper for the benchmarks

from poolx import Task, TaskSpace, get_broker
from poolx.core import batch
from poolx.pool.thread import WorkerPool

CONSUMERS = 2
TAKE = 256


def fresh_url(server: Server) -> str:
    """A URL on ``server`` with a key prefix of its own (a queue nobody else touched)."""
    return f"{server.url}?prefix=bench-{uuid4().hex[:12]}"


def take_all(url: str, n: int, start: threading.Event) -> float:
    """CONSUMERS threads take ``n`` tasks in all; returns when the last was
    taken (monotonic)."""
    queues = [get_broker(url).taskqueue for _ in range(CONSUMERS)]
    for queue in queues:
        queue.ping()  # connected before the clock starts
    lock = threading.Lock()
    taken = [0]
    done = threading.Event()

    def consume(queue: Any) -> None:
        start.wait()
        while not done.is_set():
            got = len(queue.get_many(TAKE, timeout=0.5))
            with lock:
                taken[0] += got
                if taken[0] >= n:
                    done.set()

    threads = [threading.Thread(target=consume, args=(queue,)) for queue in queues]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    end = time.monotonic()
    for queue in queues:
        queue.close()
    return end


def dispatch_due(server: Server, n: int, margin: float = 0.0) -> float:
    """Tasks/s from the common due time to the last task taken."""
    url = fresh_url(server)
    broker = get_broker(url)
    q = broker.queue()
    margin = margin or 2 + n / 10_000  # enough to schedule them all before they are due
    due = datetime.now(timezone.utc) + timedelta(seconds=margin)
    with batch(q):
        for i in range(n):
            Task(q.noop, eta=due, ignore_result=True)(i)
    left = (due - datetime.now(timezone.utc)).total_seconds()
    if left <= 0.5:  # the machine is slower than that: again, with more time
        broker.discard_pending_tasks()
        broker.close()
        return dispatch_due(server, n, margin * 2)
    go = threading.Event()
    go.set()  # the consumers block in Redis until the due time, as idle ones do
    due_mono = time.monotonic() + left
    end = take_all(url, n, go)
    return n / (end - due_mono)


def dispatch_ready(server: Server, n: int) -> float:
    """Tasks/s taking ``n`` ordinary (ready) tasks."""
    url = fresh_url(server)
    q = get_broker(url).queue()
    with batch(q):
        for i in range(n):
            Task(q.noop, ignore_result=True)(i)
    go = threading.Event()
    began = [0.0]

    def start() -> None:
        began[0] = time.monotonic()
        go.set()

    threading.Timer(0.2, start).start()  # the consumers are connected by then
    end = take_all(url, n, go)
    return n / (end - began[0])


def enqueue_rate(server: Server, m: int, scheduled: int, batched: bool) -> float:
    """Tasks/s enqueueing ``m`` ready tasks into a queue holding ``scheduled``
    far-future tasks."""
    url = fresh_url(server)
    broker = get_broker(url)
    q = broker.queue()
    if scheduled:
        with batch(q):
            for i in range(scheduled):
                Task(q.later, delay=3600, ignore_result=True)(i)
        assert broker.taskqueue.scheduled_size() == scheduled
    gc.collect()  # the set-up's garbage is not collected on the clock
    began = time.perf_counter()
    if batched:
        with batch(q):
            for i in range(m):
                q.noop(i)
    else:
        for i in range(m):
            q.noop(i)
    rate = m / (time.perf_counter() - began)
    broker.discard_pending_tasks()
    broker.close()
    return rate


def lateness(url: str, rounds: int) -> list[float]:
    """Seconds between the due time and the start of a ``delay=0.2`` task on
    an idle thread WorkerPool, ``rounds`` times."""
    ran: list[float] = []
    cond = threading.Condition()
    space = TaskSpace("bench")

    @space.task
    def stamp() -> None:
        with cond:
            ran.append(time.monotonic())
            cond.notify_all()

    broker = get_broker(url)
    broker.expose(space)
    pool = WorkerPool(broker, workers=1)
    pool.start(timeout=30)  # an idle worker blocks in the backend, as long as it may
    late = []
    try:
        q = broker.queue()
        for i in range(rounds):
            due = time.monotonic() + 0.2
            Task(q.bench.stamp, delay=0.2, ignore_result=True)()
            with cond:
                assert cond.wait_for(lambda i=i: len(ran) > i, 10)
            late.append(ran[i] - due)
    finally:
        pool.stop(use_sentinel=True)
    return late


def median(runs: list[Callable[[], float]], rounds: int) -> list[float]:
    """Median of each measurement, the measurements interleaved per round and
    in reverse order every other round (so neither always runs first)."""
    results: list[list[float]] = [[] for _ in runs]
    for r in range(rounds):
        order = list(enumerate(runs))
        for i, run in order if r % 2 == 0 else reversed(order):
            results[i].append(run())
    return [statistics.median(r) for r in results]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheduled", type=int, default=100_000,
                        help="tasks due at once / in the schedule (default 100000)")
    parser.add_argument("--enqueue", type=int, default=5_000,
                        help="ordinary tasks enqueued per rate measurement (default 5000)")
    parser.add_argument("--lateness", type=int, default=20, help="delayed tasks timed per backend")
    parser.add_argument("--rounds", type=int, default=4, help="runs per figure (median)")
    parser.add_argument("--parts", default="1,2,3", help="which measurements (default 1,2,3)")
    args = parser.parse_args(argv)
    parts = {int(part) for part in args.parts.split(",")}
    server = Server()
    try:
        n, m = args.scheduled, args.enqueue
        if 1 in parts:
            print(f"1. dispatch of {n} tasks, {CONSUMERS} consumers taking up to {TAKE} per "
                  f"call (redis://, median of {args.rounds})", flush=True)
            due, ready = median([lambda: dispatch_due(server, n),
                                 lambda: dispatch_ready(server, n)], args.rounds)
            print(f"   due at once: {due:10,.0f} tasks/s   (target >= 5,000)")
            print(f"   ready:       {ready:10,.0f} tasks/s")
            print(f"   ratio due/ready: {due / ready:.2f}\n", flush=True)
        if 2 in parts:
            print(f"2. enqueue {m} ordinary tasks beside {n} scheduled ones vs an empty queue "
                  f"(redis://, median of {args.rounds})", flush=True)
            for batched, label in ((False, "one call each"), (True, "batched")):
                with_s, without = median(
                    [lambda b=batched: enqueue_rate(server, m, n, b),
                     lambda b=batched: enqueue_rate(server, m, 0, b)], args.rounds)
                print(f"   {label:<14} with schedule {with_s:10,.0f}/s   without "
                      f"{without:10,.0f}/s   ratio {with_s / without:.2f}   (target >= 0.90)",
                      flush=True)
            print()
        if 3 in parts:
            print(f"3. lateness of a delay=0.2 task on an idle pool ({args.lateness} runs)",
                  flush=True)
            for url in ("memory://bench-delays", fresh_url(server)):
                late = lateness(url, args.lateness)
                print(f"   {url.split('?')[0]:<32} median {statistics.median(late) * 1000:6.1f}"
                      f" ms   max {max(late) * 1000:6.1f} ms   min {min(late) * 1000:6.1f} ms"
                      "   (promise: <= 50 ms, never < 0)", flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

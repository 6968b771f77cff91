"""Periodic tasks: how late each tick starts on an idle pool, with one and
with two schedulers racing, against a delayed task's lateness measured in the
same run (the same wake-up path: a task becoming ready for a blocked worker).

Run: ``python3 dev.py bench benchmarks/bench_periodic.py`` (``--ticks 10``
for a quick run).  Redis figures use a private ``redis-server`` (free
loopback port, no persistence, killed at the end).

For each backend (``memory://``, ``redis://``) and each number of schedulers
(1, 2: thread WorkerPools with ``scheduler=True`` on one queue), an entry
``every=0.2`` runs ``--ticks`` times; printed: the median, 90th percentile and
maximum of (start of the run - its due time), the ticks skipped (a gap in the
due times: a claim later than a period) and ticks run twice (must be 0).  The
baseline is bench_delays' lateness of a ``delay=0.2`` task on the same
backend; the ratio is periodic median / delayed median.  The promise: within
~50 ms of the tick on an idle machine, never before it.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from itertools import pairwise
from typing import Any

from bench_delays import fresh_url, lateness
from bench_queue import Server

from poolx import TaskSpace, get_broker
from poolx.pool.thread import WorkerPool

PERIOD = 0.2


def tick_lateness(url: str, ticks: int, schedulers: int) -> tuple[list[float], int, int]:
    """(lateness of each run, ticks skipped, ticks run twice)."""
    runs: list[tuple[float, float]] = []  # (due, started), by the wall clock
    cond = threading.Condition()
    space = TaskSpace("bench")

    @space.task
    def tick() -> None:
        """The periodic run (its due time is read from its id by the wrapper)."""

    brokers = []
    for _ in range(schedulers):
        broker = get_broker(url)
        broker.expose(space)
        real = broker.invoke

        def invoke(task: Any, real: Any = real, **kw: Any) -> Any:
            if "@" in task.id:
                with cond:
                    runs.append((int(task.id.rpartition("@")[2]) / 1000, time.time()))
                    cond.notify_all()
            return real(task, **kw)

        broker.invoke = invoke
        brokers.append(broker)
    brokers[0].periodic(brokers[0].queue().bench.tick, every=PERIOD, name="bench")
    pools = [WorkerPool(broker, workers=1, scheduler=True) for broker in brokers]
    for pool in pools:
        pool.start(timeout=30)
    try:
        with cond:
            assert cond.wait_for(lambda: len(runs) >= ticks, ticks * PERIOD * 3 + 10)
    finally:
        brokers[0].unperiodic("bench")
        for pool in pools:
            pool.stop(use_sentinel=True)
        for broker in brokers:
            broker.close()
    runs = runs[:ticks]
    dues = sorted(due for due, _ in runs)
    skipped = sum(round((b - a) / PERIOD) - 1 for a, b in pairwise(dues))
    return [started - due for due, started in runs], skipped, len(dues) - len(set(dues))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=25, help="ticks timed per configuration")
    args = parser.parse_args(argv)
    server = Server()
    try:
        print(f"lateness of periodic ticks (every={PERIOD}, {args.ticks} ticks) vs a "
              "delay=0.2 task", flush=True)
        for base in ("memory://bench-periodic", None):
            url = base or fresh_url(server)
            name = url.split("?")[0]
            delayed = statistics.median(lateness(url if base else fresh_url(server), args.ticks))
            print(f"  {name:<32} delayed task median {delayed * 1000:6.1f} ms", flush=True)
            for schedulers in (1, 2):
                late, skipped, twice = tick_lateness(url if base else fresh_url(server),
                                                     args.ticks, schedulers)
                late.sort()
                median = statistics.median(late)
                p90 = late[int(len(late) * 0.9) - 1]
                print(f"    {schedulers} scheduler{'s' if schedulers > 1 else ' '}  median "
                      f"{median * 1000:6.1f} ms  p90 {p90 * 1000:6.1f} ms  max "
                      f"{max(late) * 1000:6.1f} ms  min {min(late) * 1000:6.1f} ms  skipped "
                      f"{skipped}  twice {twice}  ratio to delayed {median / max(delayed, 1e-6):5.2f}",
                      flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

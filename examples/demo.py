"""The poolx demo: the process pool, then the task queue on it — no server.

Run it with ``python3 dev.py demo`` (or ``python examples/demo.py``).  Part 1
shows ``poolx.Pool`` surviving what hangs ``multiprocessing.Pool``; part 2
runs a WorQ-style task queue on the embedded ``memory://`` broker, consumed
by a process worker pool built on the same engine, so a task that crashes
its worker or runs past its time limit becomes a clear failure instead of a
lost task.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import poolx
from poolx import Task, TaskFailure, TaskSpace, get_broker, get_queue
from poolx.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError
from poolx.pool.process import WorkerPool

URL = "memory://"

# ------------------------------------------------------------------ part 1: the pool


def square(x: int) -> int:
    return x * x


def crash(code: int) -> None:
    os._exit(code)  # the worker dies mid-job, as a segfault or the OOM killer would


def slow(seconds: float) -> str:
    try:
        time.sleep(seconds)
        return "finished"
    except SoftTimeLimitExceeded:
        return "cleaned up after the soft time limit"


def pool_demo() -> None:
    print("== poolx.Pool: a multiprocessing.Pool that never hangs")
    with poolx.Pool(2) as pool:
        print("map:", pool.map(square, range(10)))
        print("a lambda, which multiprocessing cannot send:", pool.map(lambda x: x + 1, [1, 2, 3]))
        try:
            pool.apply(crash, (7,))
        except WorkerLostError as exc:
            print("a worker died mid-job; only its job failed:", exc)
        print("...and the pool goes on:", pool.apply(square, (12,)))
        print("soft time limit:", pool.apply(slow, (5,), soft_timeout=0.2))
        try:
            pool.apply(time.sleep, (5,), timeout=0.2)
        except TimeLimitExceeded:
            print("hard time limit: the worker was killed and replaced after 0.2 s")
        totals = pool.stats()
        print("stats:", {k: totals[k] for k in ("completed", "failed", "timed_out", "lost")})


# ------------------------------------------------------------------ part 2: the task queue

tasks = TaskSpace("demo")


@tasks.task
def num(value: int) -> int:
    return value


@tasks.task
def total(values: list[int]) -> int:
    return sum(values)


@tasks.task
def kill_worker() -> None:
    os._exit(11)  # the worker process dies under the task


@tasks.task
def forever() -> None:
    time.sleep(3600)


def init(url: str):
    """What each worker process runs once: a broker exposing the tasks."""
    broker = get_broker(url)
    broker.expose(tasks)
    return broker


def queue_demo() -> None:
    print("\n== the task queue on memory://, run by a process WorkerPool")
    workers = WorkerPool(init(URL), init, workers=2)
    workers.start(handle_sigterm=False)
    try:
        q = get_queue(URL)
        nums = [q.demo.num(i) for i in range(10)]  # ten tasks, in parallel
        result = q.demo.total(nums)  # runs once all ten are done (a Deferred graph)
        result.wait(timeout=60)
        print(f"0 + 1 + ... + 9 = {result.value}")

        crashed = q.demo.kill_worker()
        limited = Task(q.demo.forever, timeout=0.5)()  # a per-task hard time limit
        for deferred in (crashed, limited):
            deferred.wait(timeout=60)
            try:
                print("unexpected success:", deferred.value)
            except TaskFailure as failure:  # .value raises the task's failure
                print(f"failed, clearly: {failure}")  # one write: log lines cannot split it
        alive = q.demo.num(42).wait(timeout=60)
        print(f"the workers go on: {'yes' if alive else 'no'}")
    finally:
        workers.stop()


def main() -> None:
    # poolx logs each failed task and worker exit; show those lines in order
    logging.basicConfig(level=logging.WARNING, format="   [log] %(message)s", stream=sys.stdout)
    pool_demo()
    queue_demo()


if __name__ == "__main__":
    main()

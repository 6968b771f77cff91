"""Tasks with a side effect for the queue-side exactly-once soak tests, and a
consumer process that runs them (``python -m tests.worker.soak_tasks URL``).

Each task appends ``"<i> <pid>\\n"`` to a log file *first* (the side effect),
then meets its fate, and returns ``(i, pid)`` so that a test can tell which
run stored the result.  Importable by forked, forkserver and spawned workers.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from poolx import TaskSpace, get_broker

ts = TaskSpace("soak")


@ts.task
def fated(path: str, i: int, fate: str) -> tuple[int, int]:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{i} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
    if fate == "exit":
        os._exit(7)
    if fate == "raise":
        raise ValueError(i)
    if fate == "slow":  # the work itself, so that consumers die mid-task
        time.sleep(0.02)
    return i, os.getpid()


def init(url: str):
    """A worker initializer (WorQ's init_func): a broker exposing these tasks."""
    broker = get_broker(url)
    broker.expose(ts)
    return broker


def read_runs(path: str) -> dict[int, list[int]]:
    """Task number -> the pids that ran it, in order."""
    runs: dict[int, list[int]] = {}
    with open(path) as fh:
        for line in fh:
            i, pid = map(int, line.split())
            runs.setdefault(i, []).append(pid)
    return runs


def main() -> None:
    """A consumer: a thread WorkerPool of 4 on ``soak`` tasks, until killed."""
    from poolx.pool.thread import WorkerPool

    pool = WorkerPool(init(sys.argv[1]), workers=4)
    pool.start(timeout=1)
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()

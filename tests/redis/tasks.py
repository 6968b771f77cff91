"""Tasks for the Redis tests, importable by consumer subprocesses."""

from __future__ import annotations

import os
import threading

from poolx import TaskSpace

ts = TaskSpace("rt")

STUCK_ENV = "POOLX_TEST_STUCK_EVERY"


@ts.task
def square(i: int) -> int:
    """``i * i`` — except in a consumer started with POOLX_TEST_STUCK_EVERY=n,
    where every n-th task never returns (a consumer doomed to be killed)."""
    every = int(os.environ.get(STUCK_ENV, "0"))
    if every and i % every == every - 1:
        threading.Event().wait()
    return i * i


@ts.task
def touch(path: str) -> str:
    with open(path, "w") as fh:
        fh.write("ran")
    return path


@ts.task
def total(values: list[int]) -> int:
    return sum(values)


def init(url: str):
    """A worker initializer (WorQ's init_func): a broker exposing these tasks."""
    from poolx import get_broker

    broker = get_broker(url)
    broker.expose(ts)
    return broker


@ts.task
def fail_once(path: str) -> str:
    """Fail with ConnectionError the first time (it leaves ``path + '.failed'``
    behind), then write ``path`` and return it: a task that needs one retry."""
    marker = path + ".failed"
    if not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write("failed")
        raise ConnectionError("first attempt fails")
    return touch(path)


@ts.task
def clock(tag: str) -> tuple[str, float]:
    """``(tag, time.time())``: when the task ran, by the wall clock."""
    import time

    return tag, time.time()

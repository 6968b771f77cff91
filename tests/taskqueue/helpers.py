"""Helpers shared by the task-queue tests (WorQ's ``worq.tests.util``, minus
its polling loops)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from poolx.pool.thread import WorkerPool

WAIT = 10
"""Upper bound for any wait in a test; a passing test never reaches it."""


def value_of(result: Any) -> Any:
    """``result.value`` (a call, so ``pytest.raises`` blocks read naturally)."""
    return result.value


class Gate:
    """Holds a pool's threads before ``broker.next_task`` until released.

    ``gate.release()`` lets exactly one ``next_task`` call through, so a test
    can observe a task's status before and after a worker takes it.
    """

    def __init__(self) -> None:
        self._sem = threading.Semaphore(0)

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self._sem.release()

    def install(self, broker: Any) -> None:
        real = broker.next_task

        def next_task(timeout: float | None = None) -> Any:
            if not self._sem.acquire(timeout=timeout):
                return None
            return real(timeout)

        broker.next_task = next_task


@contextmanager
def thread_worker(
    broker: Any, gate: Gate | None = None, workers: int = 1, timeout: float = 1
) -> Iterator[WorkerPool]:
    """Run a thread WorkerPool on ``broker`` for the duration of the block."""
    if gate is not None:
        gate.install(broker)
    pool = WorkerPool(broker, workers=workers)
    pool.start(timeout=timeout)
    try:
        yield pool
    finally:
        pool.stop(use_sentinel=True, join=False)
        if gate is not None:
            gate.release(workers * 2)
        pool.join()
        broker.discard_pending_tasks()


class Collector:
    """A list that tasks append to, with a blocking wait for its length
    (instead of WorQ's polling ``eventually``)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    def add(self, item: Any) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait_for(self, n: int) -> list[Any]:
        """Block until ``n`` items arrived; return them."""
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.items) >= n, WAIT), self.items
            return list(self.items)

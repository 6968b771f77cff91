"""Multi-thread worker pool for a task-queue broker (WorQ's
``worq.pool.thread.WorkerPool`` under poolx's name; layer L7).

Owned here: :class:`WorkerPool` and its worker threads; its one heartbeat
thread runs :class:`poolx.consumer.heartbeats.Heartbeats`, the same
heartbeats the process pool's consumer keeps.  The pool owns no task state
of its own; the broker's backend does::

    broker.next_task(timeout) ──▶ worker thread ──▶ broker.invoke(task)
                                       │                   │ (sets the result)
                            running ◀──┘ register          ▼
                                │                     next task...
                                ▼
                        heartbeat thread ──▶ broker.heartbeat(task) every
                                             task.heartrate seconds

* **Worker threads** look ``broker.next_task`` and ``broker.invoke`` up on
  :attr:`WorkerPool.broker` at every call, so the broker (or those methods)
  can be wrapped or replaced while the pool runs.  A thread that dies (an
  exception from the broker, or a task raising ``SystemExit``) is logged and
  replaced; repeated crashes back off (:func:`poolx.checks.backoff_delay`),
  waiting on the stop event, so a broken backend cannot spin the CPU.
* **The heartbeat thread** sleeps on a condition until the earliest running
  task is due a heartbeat (or a task starts or ends), so heartbeats cost
  nothing while the pool is idle.
* **Stopping** sets an event that threads check between tasks; a task
  already taken is always finished.  ``stop(use_sentinel=True)`` also
  enqueues one no-op task per thread so threads blocked in ``next_task``
  wake at once instead of after their ``timeout``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from poolx.checks import backoff_delay, check_count
from poolx.consumer.heartbeats import Heartbeats
from poolx.consumer.scheduler import Scheduler
from poolx.task import FunctionTask, Task, TaskSpace

__all__ = ["WorkerPool"]

log = logging.getLogger(__name__)

MAX_RESTART_DELAY = 5.0
"""Longest wait before replacing a thread after repeated crashes (seconds)."""


def _noop() -> None:
    """The sentinel task: wakes a worker thread so it can see the stop event."""


class WorkerPool:
    """Multi-thread worker pool.

    :param broker: The :class:`~poolx.core.Broker` to take tasks from.
    :param workers: Number of worker threads.
    :param thread_factory: Makes each thread; called like
        ``threading.Thread(target=..., args=...)`` and must return an object
        with ``start``, ``join`` and ``is_alive``.
    :param scheduler: Also run a :class:`~poolx.consumer.scheduler.Scheduler`
        while the pool runs: it enqueues the ticks of the queue's periodic
        entries (:meth:`poolx.core.Broker.periodic`).
    """

    def __init__(
        self,
        broker: Any,
        workers: int = 1,
        thread_factory: Callable[..., Any] = threading.Thread,
        scheduler: bool = False,
    ) -> None:
        self.broker = broker
        self.workers: int = check_count("workers", workers, 1)  # type: ignore[assignment]
        self.thread_factory = thread_factory
        self.threads: list[Any] = []
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._running = False
        self._timeout: float | None = 1
        self._crashes = 0
        self._heartbeats = self._new_heartbeats()
        self._heartbeat_thread: Any = None
        self.scheduler: Scheduler | None = None
        """The running scheduler (with ``scheduler=True``), else None."""
        self._with_scheduler = bool(scheduler)
        space = TaskSpace(__name__)
        space.task(_noop, "noop")
        broker.expose(space, replace=True)

    def start(self, timeout: float | None = 1) -> None:
        """Start the worker threads and return.

        :param timeout: Seconds each thread blocks waiting for a task before
            checking whether the pool has been asked to stop.
        """
        with self._lock:
            if self._running:
                raise RuntimeError("WorkerPool is already running")
            self._running = True
            self._timeout = timeout
            self._crashes = 0
            self.stop_event.clear()
            self._heartbeats = self._new_heartbeats()
            self._heartbeat_thread = self._start_thread(self._heartbeats.run, (), "heartbeat")
            for ident in range(self.workers):
                self.threads.append(self._start_thread(self._work, (ident, 0.0), f"worker-{ident}"))
            if self._with_scheduler:
                self.scheduler = Scheduler(self.broker)
                self.scheduler.start()

    def _new_heartbeats(self) -> Heartbeats:
        return Heartbeats(self._heartbeat, label="thread pool")

    def _heartbeat(self, task: FunctionTask) -> None:
        self.broker.heartbeat(task)  # looked up at each call: the broker may be replaced

    def _start_thread(self, target: Callable[..., Any], args: tuple, role: str) -> Any:
        # Called with self._lock held, and the thread is started before the
        # lock is released: join() never sees a thread that is not started.
        thread = self.thread_factory(target=target, args=args)
        try:
            thread.name = f"poolx-{role}"
            thread.daemon = True
        except (AttributeError, RuntimeError):
            pass
        thread.start()
        return thread

    def _work(self, ident: int, delay: float) -> None:
        stop = self.stop_event
        if delay and stop.wait(delay):
            return
        try:
            while not stop.is_set():
                task = self.broker.next_task(timeout=self._timeout)
                if task is None:
                    continue
                with self._heartbeats.running(task):
                    self.broker.invoke(task)
                self._crashes = 0
        except BaseException:
            log.error("worker %s crashed", ident, exc_info=True)
            self._replace(ident)

    def _replace(self, ident: int) -> None:
        with self._lock:
            if self.stop_event.is_set():
                return
            self._crashes += 1
            delay = backoff_delay(self._crashes - 1, cap=MAX_RESTART_DELAY)  # the first at once
            log.info("replacing worker %s (restart delay %.2fs)", ident, delay)
            self.threads.append(self._start_thread(self._work, (ident, delay), f"worker-{ident}"))

    def stop(self, use_sentinel: bool = False, join: bool = True) -> None:
        """Stop the worker pool.

        Tasks already taken from the queue are finished first.

        :param use_sentinel: Enqueue a no-op task for each live thread, which
            wakes threads blocked waiting for a task.  Most useful when no
            other pool consumes the same queue.
        :param join: Wait for every thread to finish (see :meth:`join`).
        """
        self.stop_event.set()
        self._heartbeats.close()
        if self.scheduler is not None:
            self.scheduler.stop(join=False)
        if use_sentinel:
            noop = Task(self.broker.queue(__name__).noop, ignore_result=True)
            with self._lock:
                alive = sum(1 for thread in self.threads if thread.is_alive())
            for _ in range(alive):
                noop()
        if join:
            self.join()

    def join(self) -> None:
        """Wait for all threads to stop (call ``stop(join=False)`` first)."""
        joined: set[int] = set()
        while True:
            with self._lock:
                pending = [t for t in self.threads if id(t) not in joined]
                if not pending:
                    heartbeat_thread = self._heartbeat_thread
                    break
            for thread in pending:
                thread.join()
                joined.add(id(thread))
        if heartbeat_thread is not None:
            heartbeat_thread.join()
        if self.scheduler is not None:
            self.scheduler.join()
        with self._lock:
            self.threads = []
            self.scheduler = None
            self._heartbeat_thread = None
            self._running = False

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(use_sentinel=True)

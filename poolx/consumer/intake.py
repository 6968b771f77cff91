"""The consumer's intake thread: the only taker of tasks (layer L6).

Owned here: :class:`Intake` — one thread that waits until the consumer has
room (fewer tasks in flight than its :attr:`~poolx.consumer.BrokerConsumer.capacity`),
blocks in the broker for the first task, takes what else is ready up to the
room left (one backend call when the broker batches), and hands them to
the consumer together (:meth:`~poolx.consumer.BrokerConsumer.track_all`), which passes each
to the pool with its own limits when a worker can start it soon.  A broker that fails is asked again after a
backoff (:func:`poolx.checks.backoff_delay`), waiting on the consumer's stop
event, so a broken backend cannot spin the CPU::

    consumer.wait_for_room() ──▶ broker.next_tasks(room, timeout) ──▶ dispatch(tasks):
        (None once stopping;          (the only blocking call)           consumer.track_all(tasks)
         gives back tasks held                                           (held, then handed to
         too long meanwhile)                                              the pool by pump())

A task taken after the consumer started stopping (the thread was blocked in
the broker meanwhile) goes straight back to the queue.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

from poolx.checks import backoff_delay
from poolx.consumer import log_failure
from poolx.engine.pickling import portable
from poolx.queue.urls import redact_url
from poolx.task import FunctionTask, TaskFailure

__all__ = ["Intake", "IntakeOwner", "MAX_BACKOFF", "LINGER"]

log = logging.getLogger("poolx.consumer")

MAX_BACKOFF = 5.0
"""Longest wait (seconds) before asking a failing broker for tasks again."""
LINGER = 0.002
"""Seconds the intake waits before its next call after one that emptied the
queue without filling the room (tasks arriving one by one): the next call
then takes the few that arrived meanwhile, not each one alone (a call per
task costs the consumer's CPU and Redis a round trip per task).  A call that
blocks for the next task after an idle spell is not delayed."""


class IntakeOwner(Protocol):
    """What the intake needs of the consumer it takes tasks for (the
    :class:`~poolx.consumer.BrokerConsumer`): its broker and name, its stop
    event, room to wait for, and where a taken task goes."""

    broker: Any
    worker_broker: bool
    name: str
    stop_requested: threading.Event

    @property
    def accepting(self) -> bool: ...

    def wait_for_room(self) -> int | None: ...

    def count(self, what: str, n: int = 1) -> None: ...

    def track_all(self, taken: list[tuple[FunctionTask, Any]]) -> None: ...

    def store(self, task: FunctionTask, value: Any) -> None: ...

    def give_back(self, task: FunctionTask, why: str, quiet: bool = False) -> None: ...


class Intake:
    """The intake thread of one :class:`~poolx.consumer.BrokerConsumer`.

    :param consumer: The consumer it takes tasks for.
    :param timeout: Seconds one broker call blocks waiting for a task.
    """

    def __init__(self, consumer: IntakeOwner, timeout: float) -> None:
        self.consumer = consumer
        self.timeout = timeout
        self.linger = LINGER
        self._cond = threading.Condition()
        self._waiting = False  # blocked in the broker, waiting for a task
        self._done = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="poolx-consumer", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> bool:
        """True while the thread is blocked in the broker waiting for a task."""
        return self._waiting

    def wait_parked(self, deadline: float | None) -> bool:
        """Wait until the thread has ended or is blocked in the broker (where
        it hands back anything it takes from now on); False at ``deadline``."""
        with self._cond:
            while self._thread is not None and not (self._done or self._waiting):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def _set(self, *, waiting: bool | None = None, done: bool | None = None) -> None:
        with self._cond:
            if waiting is not None:
                self._waiting = waiting
            if done is not None:
                self._done = done
            self._cond.notify_all()

    def _run(self) -> None:
        consumer = self.consumer
        failures = 0
        while True:
            room = consumer.wait_for_room()
            if room is None:
                break
            try:
                self._set(waiting=True)
                try:
                    tasks = self._next_tasks(room)
                finally:
                    self._set(waiting=False)
                if tasks:
                    failures = 0
                    self.dispatch(tasks)
                if 0 < len(tasks) < room and consumer.stop_requested.wait(self.linger):
                    break
            except Exception:
                if consumer.stop_requested.is_set():
                    log.debug("%s: intake ends with an error while stopping", consumer.name,
                              exc_info=True)
                    break
                failures += 1
                delay = backoff_delay(failures, cap=MAX_BACKOFF)
                log_failure(log, "%s: cannot take tasks from %s (retrying in %.2f s)",
                            consumer.name, redact_url(consumer.broker.url), delay)
                if consumer.stop_requested.wait(delay):
                    break
        self._set(done=True)
        log.debug("%s: intake stopped", consumer.name)

    def _next_tasks(self, room: int) -> list[FunctionTask]:
        """Block up to ``timeout`` for one task, then take what is ready, up
        to ``room`` tasks (one backend call when the broker can batch)."""
        broker = self.consumer.broker
        next_tasks = getattr(broker, "next_tasks", None)
        if next_tasks is not None:
            return next_tasks(room, timeout=self.timeout)
        tasks = []
        task = broker.next_task(timeout=self.timeout)
        while task is not None:
            tasks.append(task)
            if len(tasks) >= room:
                break
            task = broker.next_task(timeout=0)
        return tasks

    def dispatch(self, tasks: list[FunctionTask]) -> None:
        """Hand tasks that were just taken to the pool (or give them back)."""
        consumer = self.consumer
        consumer.count("taken", len(tasks))
        if not consumer.accepting:
            for task in tasks:
                consumer.give_back(task, "the consumer is stopping")
            return
        if consumer.worker_broker:
            consumer.track_all([(task, None) for task in tasks])
            return
        queue_name = consumer.broker.name
        exposed = consumer.broker.tasks
        funcs: dict[str, Any] = {}  # by task name, for this batch
        taken = []
        for task in tasks:
            name = task.name
            func = funcs.get(name)
            if func is None:
                func = exposed.get(name)
                if func is None:
                    consumer.store(task, TaskFailure(name, queue_name, task.id, "no such task"))
                    continue
                func = funcs[name] = portable(func)
            taken.append((task, func))
        consumer.track_all(taken)

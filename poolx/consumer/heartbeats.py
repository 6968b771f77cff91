"""Heartbeats of running tasks, on one thread (layer L6).

Owned here: :class:`Heartbeats` — the table of running tasks and when each
is next due a heartbeat, and the loop that sends them.  Two owners use it:
:class:`~poolx.consumer.BrokerConsumer` (the tasks it handed to a process
pool; its loop also publishes the pool's status) and
:class:`poolx.pool.thread.WorkerPool` (the tasks its threads run).  Each
owner starts the thread on :meth:`Heartbeats.run` (the thread pool with its
``thread_factory``)::

    owner ── add(task) / discard(key) ──▶ table {key: (task, next due)}
                                              │  one condition
    heartbeat thread: sleeps until the earliest due time (or a change),
        then send(task) for each task due ──▶ broker.heartbeat(task)
        and tick() every tick_interval   ──▶ e.g. publish the pool's status

The thread sleeps while nothing is due, so heartbeats cost nothing on an
idle pool; it ends once :meth:`Heartbeats.close` was called and no task is
left in the table.  A failing ``send`` or ``tick`` is logged and harmless.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from poolx.consumer import log_failure
from poolx.task import FunctionTask

__all__ = ["Heartbeats"]

log = logging.getLogger("poolx.consumer")


class _Due:
    __slots__ = ("task", "due")

    def __init__(self, task: FunctionTask, due: float) -> None:
        self.task = task
        self.due = due


class Heartbeats:
    """Running tasks and the thread that keeps their heartbeats.

    :param send: Sends one heartbeat: ``send(task)`` (usually
        ``broker.heartbeat``, looked up at each call by the owner).
    :param label: Prefix of log messages (the owner's name).
    :param tick: Called on the heartbeat thread every ``tick_interval``
        seconds, or never when None.
    :param tick_interval: Seconds between two ``tick`` calls.
    """

    def __init__(
        self,
        send: Callable[[FunctionTask], Any],
        *,
        label: str = "",
        tick: Callable[[], Any] | None = None,
        tick_interval: float | None = None,
    ) -> None:
        if tick is not None and not (tick_interval and tick_interval > 0):
            raise ValueError("tick needs a positive tick_interval")
        self._send = send
        self._label = f"{label}: " if label else ""
        self._tick = tick
        self._tick_interval = tick_interval
        self._cond = threading.Condition()
        self._table: dict[int, _Due] = {}
        self._keys = itertools.count()
        self._wake: float | None = None  # when the waiting thread wakes by itself
        self._closing = False

    # -- the owner's side ------------------------------------------------------

    def add(self, task: FunctionTask) -> int:
        """A task started running: its first heartbeat is due in
        ``task.heartrate`` seconds.  Returns the key for :meth:`discard`."""
        return self.add_all([task])[0]

    def add_all(self, tasks: list[FunctionTask], now: float | None = None) -> list[int]:
        """:meth:`add` for several tasks at once (one lock); ``now``: the
        caller's ``time.monotonic()``, if it just read it."""
        if now is None:
            now = time.monotonic()
        keys = self._keys
        added = [(next(keys), _Due(task, now + task.heartrate)) for task in tasks]
        if not added:
            return []
        first = min(entry.due for _, entry in added)
        with self._cond:
            self._table.update(added)
            wake = self._wake
            if wake is None or first < wake:
                self._cond.notify()
        return [key for key, _ in added]

    def discard(self, *keys: int) -> None:
        """The tasks (by key) are answered: no more heartbeats for them."""
        with self._cond:
            table = self._table
            for key in keys:
                table.pop(key, None)
            if self._closing and not table:
                self._cond.notify_all()

    @contextmanager
    def running(self, task: FunctionTask) -> Iterator[None]:
        """``add`` on entry, ``discard`` on exit."""
        key = self.add(task)
        try:
            yield
        finally:
            self.discard(key)

    def close(self) -> None:
        """Let the thread end once no task is left (no more ticks)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._table)

    # -- the heartbeat thread ------------------------------------------------------

    def run(self) -> None:
        """The heartbeat thread's loop; returns after :meth:`close` once the
        table is empty."""
        tick, interval = self._tick, self._tick_interval
        next_tick = None if tick is None else time.monotonic() + interval  # type: ignore[operator]
        cond = self._cond
        with cond:
            while not (self._closing and not self._table):
                now = time.monotonic()
                due = [entry for entry in self._table.values() if entry.due <= now]
                tick_due = next_tick is not None and not self._closing and now >= next_tick
                if not due and not tick_due:
                    wake = min((entry.due for entry in self._table.values()), default=None)
                    if next_tick is not None and not self._closing:
                        wake = next_tick if wake is None else min(wake, next_tick)
                    self._wake = wake
                    cond.wait(None if wake is None else max(0.0, wake - now))
                    self._wake = None
                    continue
                for entry in due:
                    entry.due = now + entry.task.heartrate
                if tick_due:
                    next_tick = now + interval  # type: ignore[operator]
                cond.release()
                try:
                    self._beat([entry.task for entry in due])
                    if tick_due:
                        self._call_tick()
                finally:
                    cond.acquire()

    def _beat(self, tasks: list[FunctionTask]) -> None:
        for task in tasks:
            try:
                self._send(task)
            except Exception:
                log_failure(log, "%sheartbeat failed for %s [%s]", self._label, task.name, task.id)

    def _call_tick(self) -> None:
        try:
            self._tick()  # type: ignore[misc]
        except Exception:
            log_failure(log, "%speriodic status update failed", self._label)

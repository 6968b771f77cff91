"""Running tasks that were cancelled: the consumer's watcher thread (layer L6).

Owned here: :class:`CancelWatch` — one thread per
:class:`~poolx.consumer.BrokerConsumer` that learns which of the tasks it
has taken were cancelled (:meth:`Broker.cancel <poolx.core.Broker.cancel>`,
from any process) and has the consumer stop them::

    Broker.cancel (anywhere) ──▶ backend: outcome = cancelled, notice ──┐
                                                                        ▼ wakes
    watcher thread: broker.cancelled_tasks(ids in flight, timeout) ─────┘ (blocks in the backend)
        └─▶ owner.stop_cancelled(id): a task held ahead is dropped, a task
            in the pool has its worker killed (the pool's terminate_job)

The backend has already stored the outcome (a
:class:`~poolx.task.TaskCancelled`) when the watcher hears of it, so the
watcher only saves the work: whatever the killed job reports is dropped.

* **No polling.**  While tasks are in flight the thread blocks inside the
  backend (a condition in ``memory://``, a blocking wait on the consumer's
  notice list in Redis), which returns as soon as a cancel concerns this
  process.  With nothing in flight it waits on its own condition, which
  :meth:`CancelWatch.poke` signals when a task is taken, so an idle
  consumer costs the backend nothing.
* **A job that has not started cannot be killed** (the engine kills only
  the job a worker is running; a prefetched one waits in the engine or in
  a worker's pipe).  While a cancelled job is still in the pool, the kill
  is repeated after :data:`KILL_RETRY_FIRST` seconds, doubling up to
  :data:`KILL_RETRY_MAX`, until its answer arrives.
* A failing backend call is logged and retried after a back-off; the
  thread ends once :meth:`CancelWatch.close` was called.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from poolx.checks import backoff_delay
from poolx.consumer import log_failure

__all__ = ["CancelWatch", "CancelOwner", "WATCH_TIMEOUT", "KILL_RETRY_FIRST", "KILL_RETRY_MAX"]

log = logging.getLogger("poolx.consumer")

WATCH_TIMEOUT = 5.0
"""Longest block in the backend before the watcher looks again at the
tasks in flight (a backend may block less: Redis at most its longest
blocking call)."""
KILL_RETRY_FIRST = 0.01
"""Seconds before a cancelled job that is still in the pool is killed again."""
KILL_RETRY_MAX = 0.5
"""The longest wait between two kills of a cancelled job still in the pool."""


class CancelOwner(Protocol):
    """What the watcher needs of its consumer."""

    broker: Any
    name: str

    def in_flight_ids(self) -> list[str]: ...

    def stop_cancelled(self, task_id: str) -> None: ...

    def killing(self) -> bool: ...

    def kill_pending(self) -> None: ...


class CancelWatch:
    """The watcher thread of one consumer (see the module docstring).

    :param owner: The consumer whose tasks are watched.
    """

    def __init__(self, owner: CancelOwner) -> None:
        self.owner = owner
        self._cond = threading.Condition()
        self._idle = False  # waiting on _cond for a task to be taken
        self._closing = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="poolx-consumer-cancels",
                                        daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """A task was taken: wake the thread if it waits for one (cheap
        otherwise: no lock)."""
        if self._idle:
            with self._cond:
                self._cond.notify()

    def close(self) -> None:
        """Let the thread end (at once if idle, else after its current wait)."""
        with self._cond:
            self._closing = True
            self._cond.notify()

    def run(self) -> None:
        """The thread's loop."""
        owner = self.owner
        retry = KILL_RETRY_FIRST
        failures = 0
        while True:
            with self._cond:
                self._idle = True
                while not self._closing:
                    ids, killing = owner.in_flight_ids(), owner.killing()
                    if ids or killing:
                        break
                    self._cond.wait()
                self._idle = False
                if self._closing:
                    return
            if killing:
                owner.kill_pending()
            wait = retry if killing else WATCH_TIMEOUT
            retry = min(retry * 2, KILL_RETRY_MAX) if killing else KILL_RETRY_FIRST
            if not ids:  # only kills to repeat: no backend call
                with self._cond:
                    self._cond.wait_for(lambda: self._closing, wait)
                continue
            try:
                found = owner.broker.cancelled_tasks(ids, wait)
            except NotImplementedError:
                log.debug("%s: this backend cannot cancel tasks; not watching", owner.name)
                return
            except Exception:
                if self._closing:
                    return
                failures += 1
                delay = backoff_delay(failures, cap=WATCH_TIMEOUT)
                log_failure(log, "%s: cannot read cancelled tasks (retrying in %.2f s)",
                            owner.name, delay)
                with self._cond:
                    self._cond.wait_for(lambda: self._closing, delay)
                continue
            failures = 0
            for task_id in found:
                owner.stop_cancelled(task_id)

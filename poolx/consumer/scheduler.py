"""The scheduler: a thread that enqueues the ticks of periodic entries.

Owned here: :class:`Scheduler`.  Worker pools started with
``scheduler=True`` (and ``poolx worker --scheduler``) run one; any number
may run against one queue, on any machines::

    Broker.periodic ─▶ backend: entries {name: task, schedule, next run, version}
                                   │                ▲
    Scheduler thread: read entries ┘                │ claim (one atomic step: compare
      (the backend's clock comes with them)         │  version and next run, enqueue,
      any due? ─▶ Broker.run_periodic ──────────────┘  move next run on) — one winner
      else wait_periodic until the earliest next run, or until an entry
      changes (the backend wakes every registered scheduler), or stop()

Exactly once: of several schedulers claiming one tick, the backend lets one
enqueue it and move the entry on; the others' claims fail and they read the
entries again.  No polling: between ticks the thread blocks in the backend
(a condition in ``memory://``, ``BLPOP`` on its wake-up key in ``redis://``,
at most a few seconds per call) until the next tick is due by the backend's
clock, measured from when the entries were read.  An entry whose run cannot
be built (a spec signed with another secret, a class this process cannot
load) is logged once per version and skipped; the others keep running.  A
backend that fails (Redis unreachable beyond its retries) is logged and
retried after a back-off that waits on the stop event; one without periodic
tasks (NotImplementedError) is logged once and the thread ends.

Layer L6: uses :mod:`poolx.core` (the broker) and :mod:`poolx.periodic`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from poolx.checks import backoff_delay
from poolx.consumer import log_failure
from poolx.periodic import PeriodicEntryError

__all__ = ["Scheduler", "IDLE_WAIT"]

log = logging.getLogger(__name__)

IDLE_WAIT = 60.0
"""Seconds a scheduler with nothing due waits before reading the entries
again, at most (a change wakes it earlier; ``redis://`` blocks shorter)."""
MAX_BACKOFF = 5.0
"""Longest wait after the backend failed, before trying again (seconds)."""


class Scheduler:
    """Enqueues the ticks of the periodic entries of ``broker``'s queue.

    :param broker: The :class:`~poolx.core.Broker`; it must be usable from
        another thread (every poolx backend is).
    """

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self.id = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        """Names this scheduler's wake-ups in the backend."""
        self.enqueued = 0
        """Ticks this scheduler enqueued."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._skipped: dict[str, str] = {}  # entry name -> version that failed

    def start(self) -> None:
        """Start the scheduler thread (a daemon)."""
        if self._thread is not None:
            raise RuntimeError("the scheduler was started already")
        self._thread = threading.Thread(target=self._run, name="poolx-scheduler", daemon=True)
        self._thread.start()

    def stop(self, join: bool = True) -> None:
        """Stop enqueueing ticks (a tick being claimed is finished).

        :param join: Wait until the thread has ended.
        """
        self._stop.set()
        # Woken from another thread: with Redis unreachable the wake-up is
        # retried for retry_timeout, which must not hold up the pool's stop.
        threading.Thread(target=self._wake, name="poolx-scheduler-wake", daemon=True).start()
        if join:
            self.join()

    def _wake(self) -> None:
        try:
            self.broker.taskqueue.wake_periodic(self.id)
        except Exception:  # noqa: BLE001 - its wait ends by itself within seconds
            log.debug("could not wake scheduler %s", self.id, exc_info=True)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the thread ended.

        :param timeout: Seconds to wait at most (None: as long as it takes).
        :returns: Whether it ended within ``timeout``.
        """
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    @property
    def running(self) -> bool:
        """True while the thread runs and has not been asked to stop."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stop.is_set()

    def _run(self) -> None:
        failures = 0
        log.info("scheduler %s started on [%s]", self.id, self.broker.name)
        while not self._stop.is_set():
            try:
                self._step()
                failures = 0
            except NotImplementedError as err:  # retrying cannot help
                log.error("scheduler %s stops: %s", self.id, err)
                break
            except Exception:
                failures += 1
                log_failure(log, "scheduler %s: reading or claiming periodic entries failed",
                            self.id)
                self._stop.wait(backoff_delay(failures - 1, cap=MAX_BACKOFF))
        log.info("scheduler %s stopped", self.id)

    def _step(self) -> None:
        """Enqueue what is due, or wait until something is (or changes)."""
        store = self.broker.taskqueue
        now, entries = store.periodic_entries(self.id)
        read_at = time.monotonic()
        claimed = False
        earliest = None
        for entry in entries:
            if self._skipped.get(entry.name) == entry.version:
                continue
            if entry.next_run > now:
                earliest = entry.next_run if earliest is None else min(earliest, entry.next_run)
                continue
            if self._stop.is_set():
                return
            claimed = True
            try:
                if self.broker.run_periodic(entry, now + time.monotonic() - read_at):
                    self.enqueued += 1
            except PeriodicEntryError:  # any other error is the backend's: retried
                log.error("periodic entry %r cannot run (skipped until it is registered "
                          "again)", entry.name, exc_info=True)
                self._skipped[entry.name] = entry.version
        if claimed or self._stop.is_set():
            return  # read again: the claims moved the entries on
        if earliest is None:
            wait = IDLE_WAIT
        else:
            wait = earliest - (now + time.monotonic() - read_at)
        if wait > 0:
            store.wait_periodic(self.id, wait)

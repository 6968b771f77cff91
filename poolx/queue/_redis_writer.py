"""The group-commit writer of the ``redis://`` backend.

Owned here: :class:`Writer` — one buffer and (while there is work) one
thread per :class:`~poolx.queue.redis.TaskQueue`.  Callers ``add`` writes
(results, ``task_done`` acknowledgements) and return at once; the thread
commits everything that accumulated during the previous round trip with one
call of the ``commit`` function it was given; ``sync`` waits until what was
added so far is committed, which is how the queue reads its own writes.

The thread is not a daemon, so a process that exits normally commits its
buffer first; it exits by itself after :attr:`Writer.LINGER` idle seconds.
A commit that fails for good is logged; the tasks' leases bring them back.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Writer"]

log = logging.getLogger("poolx.queue.redis")


class Writer:
    """Group commit: one thread writes everything buffered, one call per batch."""

    LINGER = 0.2
    """Seconds the idle writer thread waits for more before it exits."""

    def __init__(self, commit: Callable[[list[Any]], None], name: str) -> None:
        self._commit = commit
        self._name = name
        self._cond = threading.Condition()
        self._items: list[Any] = []
        self._submitted = 0
        self._committed = 0
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def add(self, item: Any) -> None:
        with self._cond:
            self._items.append(item)
            self._submitted += 1
            self._ensure_thread()
            self._cond.notify()

    def _ensure_thread(self) -> None:
        # The thread clears _thread when it ends; after a fork the parent's
        # thread is not ours (nor running) whatever _thread says.
        if self._thread is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=False)
            self._thread.start()

    def sync(self) -> None:
        """Return once everything added so far is committed (or failed)."""
        with self._cond:
            target = self._submitted
            while self._committed < target:
                self._ensure_thread()
                self._cond.wait()

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            with self._cond:
                if self._thread is threading.current_thread():  # ended by an error
                    self._thread = None
                    if self._items:
                        self._ensure_thread()

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._items:
                    self._cond.wait(self.LINGER)  # idle: linger briefly for more
                    if not self._items:
                        if self._thread is threading.current_thread():
                            self._thread = None
                        return
                items, self._items = self._items, []
                upto = self._submitted
            try:
                self._commit(items)
            except BaseException as err:
                log.error(
                    "could not store %d result(s); their tasks will be delivered again "
                    "when their leases expire: %s: %s", len(items), type(err).__name__, err,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
            finally:
                with self._cond:
                    self._committed = max(self._committed, upto)
                    self._cond.notify_all()

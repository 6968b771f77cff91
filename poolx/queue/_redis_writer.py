"""The group-commit writer of the ``redis://`` backend.

Owned here: :class:`Writer` — one buffer and (while there is work) one
thread per :class:`~poolx.queue.redis.TaskQueue`.  Callers ``add`` writes
(results, ``task_done`` acknowledgements) and return at once; the thread
commits everything that accumulated during the previous round trip with one
call of the ``commit`` function it was given; ``sync`` waits until what was
added so far is committed, which is how the queue reads its own writes.

While writes keep coming, the thread paces itself: after a commit it waits
:attr:`Writer.PACE` seconds, and ``add`` does not wake it meanwhile, so the
next commit carries every write of that spell (writes arriving one by one
would otherwise cost a wake-up of the thread and a round trip each).  The
first write after an idle spell, and anything ``sync`` waits for, is
committed at once.

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
    PACE = 0.001
    """Seconds the thread waits after a commit before the next one (see the
    module docstring)."""

    def __init__(self, commit: Callable[[list[Any]], None], name: str) -> None:
        self._commit = commit
        self._name = name
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # sync() waits on it for commits
        self._work = threading.Condition(lock)  # the thread waits on it for writes
        self._items: list[Any] = []
        self._submitted = 0
        self._committed = 0
        self._idle = False  # the thread waits for a write, and add() wakes it
        self._hurry = False  # sync() waits: commit now, without pacing
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def add(self, item: Any) -> None:
        with self._cond:
            self._items.append(item)
            self._submitted += 1
            self._ensure_thread()
            if self._idle:
                self._idle = False
                self._work.notify()

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
                self._hurry = True
                self._work.notify()
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
        paced = False  # the previous round committed something
        while True:
            with self._cond:
                if paced and not self._hurry:
                    self._work.wait(self.PACE)  # let the writes of this spell gather
                if not self._items:
                    self._idle = True
                    self._work.wait(self.LINGER)  # idle: linger briefly for more
                    self._idle = False
                    if not self._items:
                        if self._thread is threading.current_thread():
                            self._thread = None
                        return
                items, self._items = self._items, []
                upto = self._submitted
                self._hurry = False
            paced = True
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

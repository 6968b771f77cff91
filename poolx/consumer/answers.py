"""The consumer's answer thread: the pool's answers, settled in batches (layer L6).

Owned here: :class:`Answers` — a queue of the pool's answers for the tasks
the consumer handed it, and the one thread that hands them, as many as
have arrived, to the consumer (:meth:`~poolx.consumer.BrokerConsumer.settle_answers`)::

    supervisor thread: job_done ──▶ add((entry, ok, value)) ──▶ deque
        (an append; a wake-up only when the thread sleeps)        │
    answer thread: takes everything queued, settle(batch) ◀───────┘
        (stores results, frees room, hands held tasks to the pool)

The supervisor thread only appends: it never waits for a result to be
stored, and a burst of answers costs one wake-up, not one per task.  The
thread starts with the first answer and ends after :meth:`Answers.close`
once nothing is queued; a ``settle`` that raises is logged and the thread
goes on.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from poolx.consumer import log_failure

__all__ = ["Answers"]

log = logging.getLogger("poolx.consumer")


class Answers:
    """The pool's answers and the thread that settles them in batches.

    :param settle: Called on the answer thread with a list of the items
        added since its previous call (in order).
    :param name: The thread's name.
    """

    def __init__(self, settle: Callable[[list[Any]], Any], name: str) -> None:
        self._settle = settle
        self._name = name
        self._items: deque[Any] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._sleeping = False  # the thread waits for an answer: add() wakes it
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, item: Any) -> None:
        """Queue one answer (any thread; the pool's supervisor thread)."""
        self._items.append(item)
        # The thread sets _sleeping before it looks at the queue a last
        # time: either it sees this item, or this sees it sleeping.
        if self._sleeping or self._thread is None:
            with self._cond:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
                elif self._sleeping:
                    self._sleeping = False
                    self._cond.notify()

    def close(self) -> None:
        """Let the thread end once nothing is queued (an answer added later
        starts it again)."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        items, cond = self._items, self._cond
        while True:
            with cond:
                self._sleeping = True
                while not items:
                    if self._closed:
                        self._thread = None  # (_sleeping stays set: add() starts another)
                        return
                    cond.wait()
                    self._sleeping = True
                self._sleeping = False
            batch = []
            while items:
                batch.append(items.popleft())
            try:
                self._settle(batch)
            except Exception:
                log_failure(log, "settling %d answers of the pool failed", len(batch))

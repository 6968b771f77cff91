"""The supervisor's timer heap: soft/hard deadlines, memory polls, re-checks.

Who owns what: one :class:`TimerHeap` belongs to the
:class:`~poolx.engine.supervisor.Supervisor` and is used only on its thread —
by the supervisor itself (the terminate grace period), by
:class:`~poolx.engine.workers.WorkerSet` (re-checking a worker whose pipe
closed, retrying a failed spawn) and by
:class:`~poolx.engine.limits.LimitKeeper` (deadlines and memory polls).  The
supervisor's loop asks :meth:`TimerHeap.next_delay` how long it may wait and
calls :meth:`TimerHeap.run_due` after every wake-up.

A :class:`Timer` is the handle :meth:`TimerHeap.schedule` returns.  Cancelling
the earliest timer (the usual case: deadlines end in the order they were
armed) removes it at once; cancelling any other marks its entry dead, to be
dropped when it reaches the top.  So that a pool which arms and cancels many
timers (a deadline per job) never accumulates dead entries, the heap is
compacted as soon as dead entries outnumber live ones (after a cancel, or
after due timers ran).
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any


class Timer:
    """One scheduled call: ``func(*args)`` at ``when`` (``time.monotonic()``).

    ``func`` is None once the timer has fired or was cancelled.
    """

    __slots__ = ("when", "func", "args")

    def __init__(self, when: float, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.func: Callable[..., Any] | None = func
        self.args = args

    @property
    def pending(self) -> bool:
        """True until the timer fires or is cancelled."""
        return self.func is not None

    def __repr__(self) -> str:
        state = "pending" if self.pending else "done"
        return f"<Timer {state} at {self.when:.3f}>"


class TimerHeap:
    """Timers ordered by due time (ties in scheduling order)."""

    __slots__ = ("_heap", "_order", "_dead")

    def __init__(self) -> None:
        # Entries are (when, order, timer) tuples: compared in C, and never
        # down to the timer itself since ``order`` is unique.
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._dead = 0  # cancelled timers still in the heap

    def __len__(self) -> int:
        """The number of pending timers."""
        return len(self._heap) - self._dead

    @property
    def dead(self) -> int:
        """Cancelled entries not yet dropped (never more than ``len(self)``)."""
        return self._dead

    def schedule(self, when: float, func: Callable[..., Any], *args: Any) -> Timer:
        """Call ``func(*args)`` at monotonic time ``when``; return its :class:`Timer`."""
        timer = Timer(when, func, args)
        heapq.heappush(self._heap, (when, next(self._order), timer))
        return timer

    def cancel(self, timer: Timer | None) -> None:
        """Cancel ``timer`` (None, fired or already cancelled: nothing happens)."""
        if timer is None or timer.func is None:
            return
        timer.func = None
        timer.args = ()
        heap = self._heap
        if heap[0][2] is timer:  # the usual case (deadlines end in order): drop it now
            heapq.heappop(heap)
            self._drop_dead_top()
        else:
            self._dead += 1
        if self._dead > len(heap) - self._dead:
            self._compact()

    def _compact(self) -> None:
        heap = self._heap
        heap[:] = [entry for entry in heap if entry[2].func is not None]
        heapq.heapify(heap)
        self._dead = 0

    def _drop_dead_top(self) -> None:
        heap = self._heap
        while heap and heap[0][2].func is None:
            heapq.heappop(heap)
            self._dead -= 1

    def next_delay(self, now: float | None = None) -> float | None:
        """Seconds until the next pending timer is due (0 if overdue), None if none."""
        self._drop_dead_top()
        if not self._heap:
            return None
        if now is None:
            now = time.monotonic()
        return max(0.0, self._heap[0][0] - now)

    def run_due(self, now: float | None = None) -> int:
        """Run every timer due at ``now`` in order; return how many ran.

        A timer scheduled by a callback for a time already past runs in the
        same call.
        """
        if now is None:
            now = time.monotonic()
        heap = self._heap
        ran = 0
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            func = timer.func
            if func is None:
                self._dead -= 1
                continue
            args = timer.args
            timer.func = None
            timer.args = ()
            func(*args)
            ran += 1
        if self._dead > len(heap) - self._dead:  # fired timers left dead ones behind
            self._compact()
        return ran

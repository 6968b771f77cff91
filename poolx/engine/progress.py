"""Counting a pool call's items for its progress bar, off the supervisor's path.

Who owns what: a :class:`Tracker` belongs to one ``map``/``imap``/executor
``map`` call that asked for ``progress_bar``.  The thread that completes the
call's jobs (the supervisor thread for :class:`~poolx.engine.results.MapResult`
and the imap iterators, the executor's delivery thread for futures) only
adds to two integers per *job* (a chunk), under no lock and with no I/O:
:meth:`Tracker.count`.  The tracker's own thread reads those counts every
refresh interval and shows them on the bar (:mod:`poolx.progress`, tqdm);
it also closes the bar once the call is over (:meth:`Tracker.finish`).  A
caller waiting for the call (``get()``, the end of iteration) closes it
itself with :meth:`Tracker.close`, which returns only once the bar shows its
last counts, so output printed after the call never interleaves with it.

A bar never raises (see :class:`poolx.progress.ProgressBar`): progress is
never a reason for a call, or the pool, to fail.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from poolx import progress

__all__ = ["Tracker", "open_tracker", "CLOSE_WAIT"]

CLOSE_WAIT = 2.0
"""Seconds :meth:`Tracker.close` waits for the bar's last output at most."""


def open_tracker(option: Any, total: int | None, what: str,
                 poll: Callable[[Tracker], None] | None = None) -> Tracker | None:
    """A started :class:`Tracker` for ``progress_bar=option``, or None for
    no bar.  Errors (a bad option, tqdm missing) are raised here, in the
    caller's thread, before anything is submitted.  ``poll``: see
    :class:`Tracker`."""
    options = progress.check_option(option)
    if options is None:
        return None
    interval = progress.refresh_interval(options)
    return Tracker(progress.open_bar(options, total, what), interval, poll)


class Tracker:
    """Counts items finished and failed; a thread of its own shows them.

    ``poll(tracker)``, if given, runs on the tracker's thread before each
    refresh (and once more when the bar closes): a front end whose results
    are cheaper to look at than to be told about (futures) counts there,
    costing the threads that complete them nothing.
    """

    def __init__(self, bar: progress.ProgressBar, interval: float,
                 poll: Callable[[Tracker], None] | None = None) -> None:
        # Written by one completing thread at a time (see the module's
        # docstring), read by the tracker's thread: plain ints suffice.
        self.items = 0
        self.failed = 0
        self._bar: progress.ProgressBar | None = bar
        self._interval = interval
        self._poll = poll
        self._over = threading.Event()
        self._closed = False
        self._close_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="poolx-progress", daemon=True)
        self._thread.start()

    def count(self, items: int, failed: int = 0) -> None:
        """``items`` more items finished, ``failed`` of them with an error."""
        self.items += items
        self.failed += failed

    def finish(self) -> None:
        """The call is over: the tracker's thread shows the last counts and
        closes the bar (without blocking the caller of this method)."""
        self._over.set()

    def close(self) -> None:
        """Show the last counts and close the bar; return once done (or
        after :data:`CLOSE_WAIT` seconds if the bar's output is stuck: a
        pipe nobody reads must not hold up the caller's ``get()``)."""
        self._over.set()
        if self._thread is threading.current_thread():
            return  # (a finalizer run on the tracker's thread): _run closes the bar itself
        self._thread.join(CLOSE_WAIT)
        if not self._thread.is_alive():
            self._close_bar()

    @property
    def closed(self) -> bool:
        """Whether the bar is closed (it shows its last counts)."""
        return self._closed

    def _run(self) -> None:
        while not self._over.wait(self._interval):
            self._show()
        self._close_bar()

    def _show(self) -> None:
        if self._poll is not None:
            self._poll(self)
        if self._bar is not None:
            self._bar.show(self.items, self.failed)  # never raises (ProgressBar)

    def _close_bar(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._show()
            bar, self._bar = self._bar, None
            if bar is not None:
                bar.close()
            self._closed = True

"""The callback thread: runs user callbacks off the supervisor's path.

Who owns what: the supervisor thread hands completed results that have
callbacks (and lifecycle notifications such as ``on_process_up``) to one
:class:`CallbackRunner` thread, which calls them in order.  A callback that
raises is logged and never kills the pool.  As in the standard library, a
result becomes ``ready()`` only after its callback returned, so callbacks
must be quick: a slow one delays the results queued behind it (but never the
supervisor, so timeouts and dead workers are still handled on time).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from poolx.engine import log

_STOP = object()


class CallbackRunner:
    """A single daemon thread executing queued calls in submission order."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: deque[Any] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._stopped = False

    def submit(self, func: Callable[..., Any], *args: Any) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._calls.append((func, args))
            self._cond.notify()

    def is_current_thread(self) -> bool:
        """True when called from this runner's own thread (from a callback)."""
        return self._thread is not None and self._thread is threading.current_thread()

    def stop(self) -> None:
        """Finish what is queued, then end the thread (does not wait)."""
        with self._cond:
            self._stopped = True
            if self._thread is not None:
                self._calls.append(_STOP)
                self._cond.notify()

    def join(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        calls, cond = self._calls, self._cond
        while True:
            with cond:
                while not calls:
                    cond.wait()
                item = calls.popleft()
            if item is _STOP:
                return
            func, args = item
            try:
                func(*args)
            except Exception:
                log.logger().exception("poolx: callback %r raised; the pool keeps running", func)

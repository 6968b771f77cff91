"""Result objects handed to callers: ApplyResult, MapResult, IMapIterator.

Who owns what: caller threads only *read* these (``get``, ``wait``, ``next``).
The supervisor thread — and, for a failing input iterable, the imap feeder —
writes them through the :class:`JobSink` methods (``job_sent``,
``job_accepted``, ``job_timed_out``, ``job_done``), once per job; the imap
feeder also calls :meth:`IMapIterator.set_length` and waits with
:meth:`IMapIterator.wait_completed`.  Those methods are the engine's
interface, not meant for users (like ``concurrent.futures.Future.set_result``).
They behave as the standard library's: same methods, return values,
exceptions and callback timing (a result is ready only after its callback
returned).
"""

from __future__ import annotations

import threading
from _thread import allocate_lock as _allocate_lock
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from poolx.engine import log
from poolx.engine.callbacks import CallbackRunner
from poolx.exceptions import TimeoutError

__all__ = ["ApplyResult", "AsyncResult", "MapResult", "IMapIterator", "IMapUnorderedIterator"]


class JobSink(Protocol):
    """What the supervisor needs from whatever waits for a job.

    Called on the supervisor thread (``job_done`` also by the caller's or the
    imap feeder's thread for a job that never reached the supervisor); each
    method must be quick and must not raise.
    """

    def job_sent(self, pid: int) -> None:
        """The job was written to worker ``pid``'s pipe."""
        ...

    def job_accepted(self, pid: int, time_accepted: float) -> None:
        """Worker ``pid`` started the job (only for jobs sent with ``FLAG_ACK``)."""
        ...

    def job_timed_out(self, soft: bool, timeout: float) -> None:
        """The job's soft (``soft=True``) or hard time limit expired."""
        ...

    def job_done(self, index: int, ok: bool, value: Any) -> None:
        """Job number ``index`` of this sink ended: its value, or its exception."""
        ...


class ApplyResult:
    """The result of :meth:`poolx.Pool.apply_async` (stdlib ``AsyncResult``)."""

    def __init__(
        self,
        runner: CallbackRunner,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
        accept_callback: Callable[[int, float], Any] | None = None,
        timeout_callback: Callable[..., Any] | None = None,
        correlation_id: Any = None,
        terminate_job: Callable[[int, int | None, int], None] | None = None,
        seq: int = 0,
        pool: Any = None,
    ) -> None:
        # A latch: a lock held until the result is set.  Waiters acquire and
        # release it in turn; far cheaper to create than a threading.Event,
        # which matters at tens of thousands of results per second.
        self._done = False
        self._latch = _allocate_lock()
        self._latch.acquire()
        self._runner = runner
        self._callback = callback
        self._error_callback = error_callback
        self._accept_callback = accept_callback
        self._timeout_callback = timeout_callback
        self._terminate_job = terminate_job
        # As in the standard library, a result keeps its pool alive: a pool
        # nobody else holds finishes the work its results wait for.
        self._pool = pool
        self.correlation_id = correlation_id
        self._worker_pid: int | None = None
        self._seq = seq  # the job's id, for terminate()
        self._success = False
        self._value: Any = None

    # -- the standard library's API ------------------------------------------------

    def ready(self) -> bool:
        """Return whether the call has completed."""
        return self._done

    def successful(self) -> bool:
        """Return whether the call completed without raising; ValueError if not ready."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the result is available or ``timeout`` seconds pass."""
        self._wait(timeout)

    def get(self, timeout: float | None = None) -> Any:
        """Return the result; re-raise the job's exception; TimeoutError on timeout."""
        if not self._wait(timeout):
            raise TimeoutError
        if self._success:
            return self._value
        raise self._value

    def _wait(self, timeout: float | None) -> bool:
        if self._done:
            return True
        if timeout is None:
            acquired = self._latch.acquire()
        else:
            acquired = self._latch.acquire(True, max(timeout, 0))
        if acquired:
            self._latch.release()  # let the next waiter through
        return self._done

    def _set_done(self) -> None:
        self._done = True
        self._latch.release()

    # -- billiard's extras -------------------------------------------------------------

    def worker_pids(self) -> list[int]:
        """The pid of the worker the job was sent to, if it was sent."""
        return [self._worker_pid] if self._worker_pid is not None else []

    def terminate(self, signum: int | None = None) -> None:
        """Kill the worker running this job (see :meth:`poolx.Pool.terminate_job`).

        Nothing happens unless this job is the one that worker is running.
        """
        if self._worker_pid is not None and self._terminate_job is not None:
            self._terminate_job(self._worker_pid, signum, self._seq)

    # -- JobSink (called by the engine) -------------------------------------------------

    def job_sent(self, pid: int) -> None:
        self._worker_pid = pid

    def job_accepted(self, pid: int, time_accepted: float) -> None:
        if self._accept_callback is not None:
            self._runner.submit(self._accept_callback, pid, time_accepted)

    def job_timed_out(self, soft: bool, timeout: float) -> None:
        if self._timeout_callback is not None:
            self._runner.submit(_call_kw, self._timeout_callback, soft, timeout)

    def job_done(self, index: int, ok: bool, value: Any) -> None:
        self._complete(ok, value)

    def _complete(self, ok: bool, value: Any) -> None:
        self._success, self._value = ok, value
        callback = self._callback if ok else self._error_callback
        if callback is None:
            self._set_done()
        else:
            self._runner.submit(self._run_callback, callback, value)

    def _run_callback(self, callback: Callable[[Any], Any], value: Any) -> None:
        try:
            callback(value)
        except Exception:
            log.logger().exception("poolx: callback %r raised; the pool keeps running", callback)
        finally:
            self._callback = self._error_callback = None
            self._set_done()

    def __repr__(self) -> str:
        state = "ready" if self.ready() else "pending"
        return f"<{type(self).__name__} {state} at {id(self):#x}>"


AsyncResult = ApplyResult


def _call_kw(callback: Callable[..., Any], soft: bool, timeout: float) -> None:
    callback(soft=soft, timeout=timeout)


class MapResult(ApplyResult):
    """The result of ``map_async``/``starmap_async``: a list, in input order."""

    def __init__(
        self,
        runner: CallbackRunner,
        chunks: list[int],
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
        pool: Any = None,
    ) -> None:
        super().__init__(runner, callback, error_callback, pool=pool)
        self._offsets = [0] * len(chunks)
        for i in range(1, len(chunks)):
            self._offsets[i] = self._offsets[i - 1] + chunks[i - 1]
        self._values: list[Any] = [None] * sum(chunks)
        self._left = len(chunks)
        self._failed = False
        if not chunks:  # the standard library completes at once, without callback
            self._success, self._value = True, []
            self._set_done()

    def job_done(self, index: int, ok: bool, value: Any) -> None:
        if self._failed:
            return
        if not ok:
            self._failed = True
            self._values = []
            self._complete(False, value)
            return
        start = self._offsets[index]
        self._values[start : start + len(value)] = value  # C-speed, like the stdlib
        self._left -= 1
        if self._left == 0:
            values, self._values = self._values, []
            self._complete(True, values)


class IMapIterator:
    """The iterator returned by :meth:`poolx.Pool.imap`: results in input order.

    Each job is a chunk; a failed chunk raises its exception once, at its
    position, and iteration goes on with the next chunk.
    """

    def __init__(self, pool: Any = None) -> None:
        self._pool = pool  # kept alive while this iterator is (see ApplyResult)
        self._cond = threading.Condition(threading.Lock())
        self._items: deque[tuple[bool, Any]] = deque()
        self._length: int | None = None  # number of chunks, once known
        self._next_chunk = 0
        self._unsorted: dict[int, tuple[bool, Any]] = {}

    def __iter__(self) -> IMapIterator:
        return self

    def next(self, timeout: float | None = None) -> Any:
        """Return the next result; TimeoutError if none arrives within ``timeout``."""
        with self._cond:
            if not self._items and not self._exhausted():
                self._cond.wait_for(lambda: self._items or self._exhausted(), timeout)
            if not self._items:
                if self._exhausted():
                    raise StopIteration
                raise TimeoutError
            ok, value = self._items.popleft()
        if ok:
            return value
        raise value

    __next__ = next

    def _exhausted(self) -> bool:
        return self._length is not None and self._next_chunk >= self._length

    def _push(self, ok: bool, value: Any) -> None:
        if ok:
            self._items.extend((True, item) for item in value)
        else:
            self._items.append((False, value))
        self._next_chunk += 1

    # -- JobSink (called by the engine) and the feeder's side

    def job_done(self, index: int, ok: bool, value: Any) -> None:
        with self._cond:
            if index == self._next_chunk:
                self._push(ok, value)
                while self._next_chunk in self._unsorted:
                    self._push(*self._unsorted.pop(self._next_chunk))
                self._cond.notify_all()
            else:
                self._unsorted[index] = (ok, value)
                self._cond.notify_all()  # the feeder waits on completions, in any order

    def job_sent(self, pid: int) -> None:
        pass

    def job_accepted(self, pid: int, time_accepted: float) -> None:
        pass

    def job_timed_out(self, soft: bool, timeout: float) -> None:
        pass

    def completed(self) -> int:
        """How many chunks have completed (read without the lock: a hint)."""
        return self._next_chunk + len(self._unsorted)

    def wait_completed(self, count: int) -> None:
        """Block the feeder until ``count`` chunks have completed."""
        with self._cond:
            self._cond.wait_for(lambda: self.completed() >= count)

    def set_length(self, chunks: int) -> None:
        """Called by the feeder once the input is exhausted."""
        with self._cond:
            self._length = chunks
            self._cond.notify_all()


class IMapUnorderedIterator(IMapIterator):
    """The iterator returned by ``imap_unordered``: results as they complete."""

    def job_done(self, index: int, ok: bool, value: Any) -> None:
        with self._cond:
            self._push(ok, value)
            self._cond.notify_all()

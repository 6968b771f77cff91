"""Result objects handed to callers: ApplyResult, MapResult, IMapIterator.

Who owns what: caller threads only *read* these (``get``, ``wait``, ``next``).
The supervisor thread — and, for a failing input iterable, the imap feeder —
writes them through the :class:`JobSink` methods (``job_sent``,
``job_accepted``, ``job_timed_out``, ``job_done``), once per job (a sink
that needs only some of them subclasses :class:`BaseJobSink`, as the
executor's and the consumer's do); the imap feeder also calls
:meth:`IMapIterator.set_length` and waits with
:meth:`IMapIterator.wait_completed`.  Those methods are the engine's
interface, not meant for users (like ``concurrent.futures.Future.set_result``).
They behave as the standard library's: same methods, return values,
exceptions and callback timing (a result is ready only after its callback
returned).

A map or imap called with ``progress_bar`` carries a
:class:`~poolx.engine.progress.Tracker`: ``job_done`` adds the chunk's items
to it (two integer additions), the result's completion finishes it, and the
caller's ``get()``/``wait()`` or the end of iteration closes its bar.

Compatibility: each class subclasses its ``multiprocessing.pool``
counterpart, so ``isinstance`` checks against the standard library's classes
hold, and carries the private fields that code polls for progress, read-only
in meaning: ``_job`` (a unique id), ``MapResult._chunksize`` and
``MapResult._number_left`` (chunks not finished yet).  A result not ready yet
is listed in the ``cache`` mapping it was created with (the pool's
``_cache``), under its ``_job``.
"""

from __future__ import annotations

import itertools
import multiprocessing.pool as mp_pool
import threading
from _thread import allocate_lock as _allocate_lock
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from poolx.engine import log
from poolx.engine.callbacks import CallbackRunner
from poolx.engine.progress import Tracker
from poolx.exceptions import TimeoutError

__all__ = ["ApplyResult", "AsyncResult", "MapResult", "IMapIterator", "IMapUnorderedIterator",
           "JobSink", "BaseJobSink"]


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

    def job_done(self, index: int, ok: bool, value: Any, seconds: float | None = None) -> None:
        """Job number ``index`` of this sink ended: its value, or its exception;
        ``seconds`` how long its worker ran it, when the worker returned (a
        result or an exception: what :class:`poolx.Pool` times in its own
        task tally), else None."""
        ...


class BaseJobSink:
    """The no-op :meth:`~JobSink.job_sent`, :meth:`~JobSink.job_accepted`
    and :meth:`~JobSink.job_timed_out` of a :class:`JobSink`: a sink
    subclasses it, implements ``job_done`` and overrides what it needs (it
    adds no instance attribute: a sink with ``__slots__`` keeps them)."""

    __slots__ = ()

    def job_sent(self, pid: int) -> None:
        """Ignored (see :meth:`JobSink.job_sent`)."""

    def job_accepted(self, pid: int, time_accepted: float) -> None:
        """Ignored (see :meth:`JobSink.job_accepted`)."""

    def job_timed_out(self, soft: bool, timeout: float) -> None:
        """Ignored (see :meth:`JobSink.job_timed_out`)."""


_job_counter = itertools.count()


class ApplyResult(mp_pool.ApplyResult):  # type: ignore[type-arg]
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
        cache: dict[int, Any] | None = None,
        pool: Any = None,
    ) -> None:
        # The standard library's fields, with its meaning: a unique id, and
        # an entry in the pool's cache until the result is ready.
        self._job = next(_job_counter)
        self._cache = cache
        if cache is not None:
            cache[self._job] = self
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
        if self._cache is not None:
            self._cache.pop(self._job, None)
            self._cache = None

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

    def job_done(self, index: int, ok: bool, value: Any, seconds: float | None = None) -> None:
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


class MapResult(ApplyResult, mp_pool.MapResult):  # type: ignore[type-arg]
    """The result of ``map_async``/``starmap_async``: a list, in input order."""

    def __init__(
        self,
        runner: CallbackRunner,
        chunks: list[int],
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
        chunksize: int = 0,
        cache: dict[int, Any] | None = None,
        pool: Any = None,
        tracker: Tracker | None = None,
    ) -> None:
        super().__init__(runner, callback, error_callback, cache=cache, pool=pool)
        self._chunksize = chunksize if chunks else 0  # the standard library's fields
        self._number_left = len(chunks)
        self._offsets = [0] * len(chunks)
        for i in range(1, len(chunks)):
            self._offsets[i] = self._offsets[i - 1] + chunks[i - 1]
        self._length = sum(chunks)
        self._values: list[Any] = [None] * self._length
        self._failed = False
        self._progress: threading.Condition | None = None  # see wait_chunks
        self._tracker = tracker  # the progress bar's counts, if one was asked for
        if not chunks:  # the standard library completes at once, without callback
            self._success, self._value = True, []
            self._set_done()
            if tracker is not None:
                tracker.close()

    def job_done(self, index: int, ok: bool, value: Any, seconds: float | None = None) -> None:
        self._number_left -= 1
        tracker = self._tracker
        if tracker is not None:
            if ok:
                tracker.count(len(value))
            else:
                end = self._offsets[index + 1] if index + 1 < len(self._offsets) else self._length
                tracker.count(end - self._offsets[index], end - self._offsets[index])
        if not self._failed:
            if not ok:
                self._failed = True
                self._values = []
                self._complete(False, value)
                if tracker is not None:
                    tracker.finish()
            else:
                start = self._offsets[index]
                self._values[start : start + len(value)] = value  # C-speed, like the stdlib
                if self._number_left == 0:
                    values, self._values = self._values, []
                    self._complete(True, values)
                    if tracker is not None:
                        tracker.finish()
        progress = self._progress
        if progress is not None:
            with progress:
                progress.notify_all()

    def track_progress(self) -> None:
        """Let a submitter wait for chunks with :meth:`wait_chunks` (call
        before submitting any)."""
        self._progress = threading.Condition(threading.Lock())

    def wait_chunks(self, count: int) -> bool:
        """Block until ``count`` chunks have finished; False (at once) if the
        map has failed: the rest need not be submitted."""
        progress = self._progress
        assert progress is not None, "track_progress() first"
        total = len(self._offsets)
        with progress:
            progress.wait_for(lambda: self._failed or total - self._number_left >= count)
        return not self._failed

    def _wait(self, timeout: float | None) -> bool:
        try:
            done = super()._wait(timeout)
        except BaseException:  # CTRL+C in get(): the bar must not draw over the traceback
            if self._tracker is not None:
                self._tracker.close()
            raise
        if done and self._tracker is not None:
            self._tracker.close()  # the bar shows its last counts before get() returns
        return done


class IMapIterator(mp_pool.IMapIterator, BaseJobSink):  # type: ignore[type-arg]
    """The iterator returned by :meth:`poolx.Pool.imap`: results in input order.

    Each job is a chunk; a failed chunk raises its exception once, at its
    position, and iteration goes on with the next chunk.
    """

    def __init__(self, cache: dict[int, Any] | None = None, pool: Any = None,
                 tracker: Tracker | None = None, chunksize: int = 1) -> None:
        self._pool = pool  # kept alive while this iterator is (see ApplyResult)
        # The progress bar's counts, if one was asked for: a chunk has
        # ``chunksize`` items but those listed in _chunk_items (the last one).
        self._tracker = tracker
        self._chunksize = chunksize
        self._chunk_items: dict[int, int] = {}
        self._job = next(_job_counter)
        self._cache = cache
        if cache is not None:
            cache[self._job] = self
        self._cond = threading.Condition(threading.Lock())
        self._items: deque[tuple[bool, Any]] = deque()
        self._length: int | None = None  # number of chunks, once known
        self._next_chunk = 0
        self._unsorted: dict[int, tuple[bool, Any]] = {}
        # The window: how far the feeder may run ahead of what the caller took.
        self._pushed = 0  # items (a failed chunk is one item) delivered to _items so far
        self._taken = 0  # items the caller took
        self._ends: deque[int] = deque()  # _pushed at the end of each chunk not yet taken
        self._consumed = 0  # chunks whose every item the caller took
        self._feeder_waits = False
        self._released = False

    def __iter__(self) -> IMapIterator:
        return self

    def next(self, timeout: float | None = None) -> Any:
        """Return the next result; TimeoutError if none arrives within ``timeout``."""
        with self._cond:
            if not self._items and not self._exhausted():
                self._cond.wait_for(lambda: self._items or self._exhausted(), timeout)
            if self._items:
                ok, value = self._items.popleft()
                self._taken += 1
                ends = self._ends
                while ends and ends[0] <= self._taken:
                    ends.popleft()
                    self._consumed += 1
                    if self._feeder_waits:
                        self._cond.notify_all()
            elif not self._exhausted():
                raise TimeoutError
            else:
                ok = None
        if ok is None:
            if self._tracker is not None:
                self._tracker.close()  # the bar shows its last counts before iteration ends
            raise StopIteration
        if ok:
            return value
        raise value

    __next__ = next

    def _exhausted(self) -> bool:
        return self._length is not None and self._next_chunk >= self._length

    def _notify(self) -> None:  # with the lock held, after a change
        self._cond.notify_all()
        if self._exhausted():  # every result is in
            if self._cache is not None:
                self._cache.pop(self._job, None)
                self._cache = None
            if self._tracker is not None:
                self._tracker.finish()

    def _push(self, ok: bool, value: Any) -> None:
        if ok:
            self._items.extend((True, item) for item in value)
            self._pushed += len(value)
        else:
            self._items.append((False, value))
            self._pushed += 1
        self._ends.append(self._pushed)
        self._next_chunk += 1

    # -- JobSink (called by the engine) and the feeder's side

    def job_done(self, index: int, ok: bool, value: Any, seconds: float | None = None) -> None:
        with self._cond:
            if self._tracker is not None:
                self._count(index, ok, value)
            if index == self._next_chunk:
                self._push(ok, value)
                while self._next_chunk in self._unsorted:
                    self._push(*self._unsorted.pop(self._next_chunk))
                self._notify()
            else:
                self._unsorted[index] = (ok, value)

    def _count(self, index: int, ok: bool, value: Any) -> None:  # with the lock held
        assert self._tracker is not None
        if ok:
            self._tracker.count(len(value))
        else:  # a failed chunk: every item in it failed
            items = self._chunk_items.get(index, self._chunksize)
            self._tracker.count(items, items)

    def set_chunk_items(self, index: int, items: int) -> None:
        """The feeder: chunk ``index`` holds ``items`` items, not ``chunksize``
        (the last one; or 1 for the input's own error).  Call before its
        :meth:`job_done`."""
        self._chunk_items[index] = items

    def completed(self) -> int:
        """How many chunks have completed (read without the lock: a hint)."""
        return self._next_chunk + len(self._unsorted)

    def wait_completed(self, count: int) -> None:
        """Block the feeder until ``count`` chunks have completed."""
        with self._cond:
            self._cond.wait_for(lambda: self.completed() >= count)

    def consumed(self) -> int:
        """How many chunks the caller has taken every item of (read without
        the lock: a hint)."""
        return self._consumed

    def wait_consumed(self, count: int) -> bool:
        """Block the feeder until the caller has taken ``count`` chunks, or
        the window is released (see :meth:`release_window`); False then."""
        with self._cond:
            self._feeder_waits = True
            self._cond.wait_for(lambda: self._consumed >= count or self._released)
            self._feeder_waits = False
            return not self._released

    def release_window(self) -> None:
        """The pool is closing: the feeder no longer waits for the caller
        (it finishes the input, as the standard library's does)."""
        with self._cond:
            self._released = True
            self._cond.notify_all()

    @property
    def window_released(self) -> bool:
        return self._released

    def set_length(self, chunks: int) -> None:
        """Called by the feeder once the input is exhausted."""
        with self._cond:
            self._length = chunks
            self._notify()


class IMapUnorderedIterator(IMapIterator, mp_pool.IMapUnorderedIterator):  # type: ignore[type-arg]
    """The iterator returned by ``imap_unordered``: results as they complete."""

    def job_done(self, index: int, ok: bool, value: Any, seconds: float | None = None) -> None:
        with self._cond:
            if self._tracker is not None:
                self._count(index, ok, value)
            self._push(ok, value)
            self._notify()

"""``poolx.ProcessPoolExecutor``: ``concurrent.futures`` on the engine that never hangs.

Data flow::

    caller threads                  _ExecutorCore (one lock)                the engine (poolx.Pool)
    --------------                  ------------------------                -----------------------
    submit / schedule / map ─pickle─▶ pending deque ─launch (window)─▶ Pool.submit_job(item, run_call, ...)
      returns a Future (PENDING)      the future turns RUNNING               │ supervisor dispatches,
                                                                             │ a worker runs run_call
                                    delivery thread                          │
    Future.result() ◀─set_result/──  settles outcomes in batches, ◀─────────┘ item.job_done(...)
                      set_exception  launches what waits               (supervisor thread: append + wake)

Who owns what:

* :class:`ProcessPoolExecutor` is the public face: the standard library's
  constructor and methods, argument errors and messages; it owns nothing but
  its :class:`_ExecutorCore`, so that garbage-collecting it can shut the
  core down while calls are still running (as the standard library does).
* :class:`_ExecutorCore` owns the pending calls, the launch window, the
  :class:`~poolx.Pool` and a delivery thread.  It talks to the pool through
  its public methods only (``submit_job``, ``terminate_job``, ``close``,
  ``terminate``, ``join``, ``broken``, ``stats``).  Each launched call's
  :class:`_WorkItem` is its job's sink: the supervisor thread only appends
  the outcome to a deque and wakes the delivery thread, which unpickles
  outcomes and completes futures — never the supervisor thread, and never
  under the core's lock, because a future's done callbacks are user code
  (they may call back into the executor).
* :mod:`poolx.engine.executor_worker` is the part that runs in workers: it
  calls the function and pickles the outcome the way ``concurrent.futures``
  reports it.

Why a launch window: ``Future.cancel()`` must keep its standard meaning — it
succeeds only while the call has not been handed to a worker, and a
cancelled call never runs.  The engine cannot take back a job once
submitted, so the core hands it only what keeps the workers busy: about two
calls per worker (the standard library keeps ``max_workers + 1`` queued),
plus, for tiny calls, as many as fill :data:`LOOKAHEAD` seconds (estimated
from the pace of completions), so that the engine can still batch them.  The
rest wait, cancellable, in the pending deque; completions launch them, half
a window at a time.

The one intended difference from the standard library: where its executor
breaks for good (a worker died, a result or an argument could not be
unpickled), poolx fails only the future concerned — with
:class:`~poolx.exceptions.WorkerLostError` or another
``BrokenProcessPool`` — and the executor stays usable.
"""

from __future__ import annotations

import itertools
import os
import pickle
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Executor, Future
from concurrent.futures.process import BrokenProcessPool
from types import FunctionType
from typing import Any

from poolx import checks
from poolx.engine import log, payload, pickling
from poolx.engine.api import Pool
from poolx.engine.executor_worker import (
    BAD_CALL,
    NOT_STARTED,
    RESULT,
    init_worker,
    run_call,
    run_chunk,
)
from poolx.engine.progress import Tracker, open_tracker
from poolx.engine.results import BaseJobSink
from poolx.exceptions import Terminated
from poolx.progress import ProgressOption
from poolx.tally import TaskTally, failure_outcome, raised_outcome, task_name

__all__ = ["ProcessPoolExecutor"]

LOOKAHEAD = 0.02  # seconds of predicted work launched beyond two calls per worker
MAX_WINDOW = 1024  # launched calls at most (per executor, unless workers need more)
_EWMA_WEIGHT = 0.1

# Work item states (plain ints: checked on every completion).
PENDING, LAUNCHED, ABANDONED, DROPPED, DONE = range(5)

_SHUTDOWN_MESSAGE = "cannot schedule new futures after shutdown"
_EXIT_MESSAGE = "cannot schedule new futures after interpreter shutdown"

_interpreter_exiting = False
_live_cores: weakref.WeakSet[_ExecutorCore] = weakref.WeakSet()


class _WorkItem(BaseJobSink):
    """One submitted call, from ``submit`` until its future is settled.

    Once launched it is also the job's sink: the supervisor reports to it
    (:class:`~poolx.engine.results.JobSink`) and it hands the outcome to the
    core's delivery thread.
    """

    __slots__ = ("core", "future", "payload", "limits", "token", "slot", "state", "seq", "pid",
                 "terminating", "name", "counted")

    def __init__(self, core: _ExecutorCore, future: Future, payload: bytes,
                 limits: tuple[Any, Any, Any] | None, token: int, name: str) -> None:
        self.core = core
        self.future = future
        self.payload: bytes | None = payload
        self.limits = limits
        self.token = token
        self.slot = -1
        self.state = PENDING
        self.seq = 0  # the engine's job id, once launched
        self.pid: int | None = None  # the worker it was sent to
        self.terminating = False  # terminate() was called: a second call does nothing
        self.name = name  # what the task tally counts it under: the submitted function's name
        self.counted = False  # counted as started in the core's tally

    # -- JobSink: called on the supervisor thread; quick, never raising --------
    def job_sent(self, pid: int) -> None:
        self.pid = pid

    def job_done(self, index: int, ok: bool, value: Any, seconds: float | None = None) -> None:
        self.core.deliver(self, ok, value, seconds)


# A module-level function's pickle (a reference by name), made once: pickling
# a function looks its module up every time, a large part of a tiny call's
# cost.  Workers keep what they unpickle from it (executor_worker._functions).
_function_pickles: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()


def _dumps_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Pickle a call; a function plain pickle cannot send goes by cloudpickle."""
    if type(fn) is FunctionType:
        data = _function_pickles.get(fn)
        if data is None and "<" not in fn.__qualname__:  # not a lambda, not a local function
            try:
                data = _function_pickles[fn] = pickle.dumps(fn, pickling.PROTOCOL)
            except Exception:
                data = None
        if data is not None:
            return pickle.dumps((data, args, kwargs), pickling.PROTOCOL)
    try:
        return pickle.dumps((fn, args, kwargs), pickling.PROTOCOL)
    except Exception as error:
        try:
            wrapped = pickling.portable(fn)
        except Exception:
            raise error from None
        if wrapped is fn:  # the function was fine: the arguments are not
            raise
        return pickle.dumps((wrapped, args, kwargs), pickling.PROTOCOL)


def _not_started() -> Terminated:
    error = Terminated("terminated before it started")
    error.started = False
    return error


def _broken_copy(broken: BaseException) -> BaseException:
    error = type(broken)(*broken.args)
    error.__cause__ = broken.__cause__
    return error


def _outcome(ok: bool, value: Any) -> tuple[bool, Any]:
    """Turn what the engine reported into ``(is_result, result_or_exception)``."""
    if not ok:  # the engine's own verdict: lost worker, time or memory limit...
        return False, value
    try:
        code, value = pickling.unpickle(value)
    except BaseException as exc:  # noqa: B036 - even SystemExit: fail this future only
        error = BrokenProcessPool(
            f"the result of this call could not be unpickled in the parent process: {exc!r}")
        error.__cause__ = exc
        return False, error
    if code == RESULT:
        return True, value
    if code == NOT_STARTED:
        return False, _not_started()
    if code == BAD_CALL:
        error = BrokenProcessPool(f"the call could not be unpickled in the worker: {value!r}")
        error.__cause__ = value
        return False, error
    return False, value


_NOT_RUN = ""
"""The tally outcome of a call that never started (it counts nowhere)."""


def _tally_outcome(ok: bool, is_result: bool, value: Any) -> str | None:
    """How a call :func:`_outcome` reported ends in the task tally: None
    (it returned), one of :data:`poolx.tally.FAILURE_OUTCOMES`, or
    :data:`_NOT_RUN`."""
    if is_result:
        return None
    if not ok:  # the engine's verdict (time or memory limit, lost, terminated...)
        outcome = failure_outcome(value)
        return _NOT_RUN if outcome is None else outcome
    if isinstance(value, Terminated) and getattr(value, "started", None) is False:
        return _NOT_RUN  # stopped by its stop slot before it started (NOT_STARTED)
    return raised_outcome(value)  # it raised (or could not be sent back)


def _settle_future(future: Future, is_result: bool, value: Any) -> None:
    """Complete a future; the delivery thread must survive anything (a future
    that someone else completed, a done callback that raises is logged by
    ``concurrent.futures`` itself)."""
    try:
        if is_result:
            future.set_result(value)
        else:
            future.set_exception(value)
    except Exception:
        log.logger().exception("poolx: cannot complete %r", future)


class _ExecutorCore:
    """The executor's state, shared with the engine (see the module docstring).

    Threads: callers (``submit``, ``terminate``, ``shutdown``) and the
    delivery thread (settles outcomes, launches pending calls) change it under
    :attr:`lock`; the supervisor thread only appends outcomes to
    :attr:`completed` and wakes the delivery thread.  Futures are always
    settled outside the lock.
    """

    def __init__(self, max_workers: int, pool_kwargs: dict[str, Any],
                 initializer: Any, initargs: Any,
                 on_timeout_set: Callable[..., Any] | None,
                 on_timeout_cancel: Callable[..., Any] | None) -> None:
        self.max_workers = max_workers
        self.pool_kwargs = pool_kwargs
        self.initializer = initializer
        self.initargs = initargs
        self.on_timeout_set = on_timeout_set
        self.on_timeout_cancel = on_timeout_cancel
        self.lock = threading.Lock()
        self.pool: Pool | None = None
        self.pending: deque[_WorkItem] = deque()
        self.items: dict[Future, _WorkItem] = {}  # unsettled calls, for terminate()
        self.tally = TaskTally()  # per submitted function, under the lock: see stats()
        self.tokens = itertools.count(1)
        self.min_window = 2 * max_workers + 1
        self.max_window = max(MAX_WINDOW, self.min_window)
        self.window = self.min_window
        self.inflight = 0
        self.gap: float | None = None  # EWMA of the time between completions under load
        self.last_done: float | None = None
        self.free_slots: list[int] = []
        self.stop_slots: Any = None
        self.is_shutdown = False
        self.closed = False  # nothing will be launched any more
        self.closed_event = threading.Event()
        # The delivery thread and its inbox (appended to by the supervisor thread).
        self.completed: deque[tuple[_WorkItem, bool, Any, float | None]] = deque()
        self.wakeup = threading.Condition(threading.Lock())
        self.waiting = False
        self.delivery: threading.Thread | None = None
        self.pid = os.getpid()
        _live_cores.add(self)

    # ------------------------------------------------------------------ submit

    def _start_pool(self) -> None:  # lock held
        ctx = self.pool_kwargs["context"]
        self.stop_slots = ctx.RawArray("q", self.max_window)
        self.free_slots = list(range(self.max_window - 1, -1, -1))
        kwargs = dict(self.pool_kwargs)
        user_set, user_cancel = self.on_timeout_set, self.on_timeout_cancel
        if user_set is not None:
            kwargs["on_timeout_set"] = lambda item, soft, hard: user_set(item.future, soft, hard)
        if user_cancel is not None:
            kwargs["on_timeout_cancel"] = lambda item: user_cancel(item.future)
        self.pool = Pool(self.max_workers, init_worker,
                         (self.stop_slots, self.initializer, tuple(self.initargs)), **kwargs)
        self.delivery = threading.Thread(target=self._deliver_forever, name="poolx-executor",
                                         daemon=True)
        self.delivery.start()

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
               limits: tuple[Any, Any, Any] | None) -> Future:
        future: Future = Future()
        failure: BaseException | None = None
        name = task_name(args[0] if fn is run_chunk else fn)  # a map's chunk: its function
        try:
            payload = _dumps_call(fn, args, kwargs)
            error = None
        except Exception as exc:  # as the standard library: it fails the future
            payload, error = b"", exc
        with self.lock:
            pool = self.pool
            if pool is not None and pool.broken is not None:
                raise _broken_copy(pool.broken)
            if self.is_shutdown:
                raise RuntimeError(_SHUTDOWN_MESSAGE)
            if _interpreter_exiting:
                raise RuntimeError(_EXIT_MESSAGE)
            if error is None:
                if pool is None:
                    self._start_pool()
                item = _WorkItem(self, future, payload, limits, next(self.tokens), name)
                self.items[future] = item
                if self.pending or self.inflight >= self.window:
                    self.pending.append(item)
                    return future
                future.set_running_or_notify_cancel()
                failure = self._launch(item)
        if error is not None:
            future.set_running_or_notify_cancel()
            future.set_exception(error)
        elif failure is not None:
            future.set_exception(failure)
        return future

    def _launch(self, item: _WorkItem) -> BaseException | None:  # lock held
        """Hand a RUNNING item to the engine; an error to settle it with if
        the pool refused it (the caller settles it after the lock)."""
        assert self.pool is not None
        item.slot = self.free_slots.pop()
        item.state = LAUNCHED
        self.inflight += 1
        args = (item.slot, item.token, item.payload)
        item.payload = None
        try:
            if item.limits is None:
                item.seq = self.pool.submit_job(item, run_call, args)
            else:
                soft, hard, memory = item.limits
                item.seq = self.pool.submit_job(item, run_call, args, soft_timeout=soft,
                                                timeout=hard, memory_limit=memory)
        except Exception as exc:  # the pool stopped under us (it was terminated)
            self._settle(item)
            return exc
        return None

    # ------------------------------------------------------------------ completion

    def deliver(self, item: _WorkItem, ok: bool, value: Any, seconds: float | None) -> None:
        """Supervisor thread: queue an outcome (and the job's run time, if
        its worker returned) for the delivery thread."""
        self.completed.append((item, ok, value, seconds))
        if self.waiting:  # once per batch: the first outcome clears the flag
            with self.wakeup:
                if self.waiting:
                    self.waiting = False
                    self.wakeup.notify()

    def _wake_delivery(self) -> None:
        with self.wakeup:
            self.wakeup.notify()

    def _deliver_forever(self) -> None:
        """The delivery thread: settle outcomes in batches, launch what waits.

        It ends once the executor is closed and every launched call has been
        settled (no outcome can arrive any more).
        """
        completed, wakeup = self.completed, self.wakeup
        while True:
            with wakeup:
                while not completed:
                    if self.closed and self.inflight == 0:
                        return
                    self.waiting = True
                    wakeup.wait()
                self.waiting = False
            batch = []
            while completed:
                batch.append(completed.popleft())
            self._complete(batch)

    def _complete(self, batch: list[tuple[_WorkItem, bool, Any, float | None]]) -> None:
        now = time.monotonic()
        with self.lock:
            ours = [entry for entry in batch if self._settle(entry[0])]
            if self.pending:
                # Estimate the time per call from the pace of completions while
                # calls wait; it sizes the window (see the module docstring).
                last = self.last_done
                if last is not None:
                    gap = (now - last) / len(batch)
                    ewma = self.gap
                    self.gap = gap if ewma is None else ewma + (gap - ewma) * _EWMA_WEIGHT
                    self.window = min(self.max_window,
                                      self.min_window + int(LOOKAHEAD / max(self.gap, 1e-7)))
                self.last_done = now
            else:
                self.last_done = None
            failures = self._refill()
        outcomes = []
        for item, ok, value, seconds in ours:
            is_result, value = _outcome(ok, value)
            outcomes.append((item, is_result, value, _tally_outcome(ok, is_result, value), seconds))
        with self.lock:
            tally = self.tally
            for item, _, _, ended, seconds in outcomes:
                if ended != _NOT_RUN:
                    tally.ended(item.name, ended, seconds, item.counted)
        for item, is_result, value, _, _ in outcomes:
            _settle_future(item.future, is_result, value)
        for future, error in failures:
            _settle_future(future, False, error)

    def _settle(self, item: _WorkItem) -> bool:  # lock held
        """Account for a finished item; True if its future is still ours to set."""
        ours = item.state == LAUNCHED
        item.state = DONE
        self.inflight -= 1
        self.free_slots.append(item.slot)
        self.items.pop(item.future, None)
        return ours

    def _refill(self) -> list[tuple[Future, BaseException]]:  # lock held
        """Launch pending items while the window allows; close the pool once
        a shut-down executor has nothing left to launch."""
        failures: list[tuple[Future, BaseException]] = []
        pending = self.pending
        # Launch in batches (half the window's room for tiny calls, at once
        # for slow ones): the engine then dispatches many calls per wake-up.
        if pending and self.inflight <= self.window - max(1, (self.window - self.min_window) // 2):
            pool = self.pool
            broken = pool.broken if pool is not None else None
            while pending and (self.inflight < self.window or broken is not None):
                item = pending.popleft()
                if item.state != PENDING:
                    continue  # terminated while pending: already settled
                if not item.future.set_running_or_notify_cancel():
                    item.state = DROPPED  # cancelled: it never runs
                    self.items.pop(item.future, None)
                    continue
                if broken is not None:
                    item.state = DONE
                    self.items.pop(item.future, None)
                    failures.append((item.future, _broken_copy(broken)))
                    continue
                failure = self._launch(item)
                if failure is not None:
                    failures.append((item.future, failure))
        if self.is_shutdown and not pending and not self.closed:
            self._close()
        return failures

    # ------------------------------------------------------------------ terminate, shutdown

    def terminate(self, future: Future) -> bool:
        with self.lock:
            item = self.items.get(future)
            if item is None or item.state not in (PENDING, LAUNCHED) or item.terminating:
                return False
            item.terminating = True
            pool = self.pool
            if item.state == PENDING:
                item.state = DROPPED  # left in the deque; skipped there
                self.items.pop(future, None)
                settle_now = True
            else:
                # A worker reads the stop slot just before it starts the call;
                # the engine kills the worker if the call is already running.
                self.stop_slots[item.slot] = item.token
                settle_now = item.pid is None  # not even sent: it cannot have started
                if settle_now:
                    item.state = ABANDONED  # its NOT_STARTED outcome only frees the slot
                elif pool is not None and item.pid is not None:
                    pool.terminate_job(item.pid, signal.SIGKILL, item.seq)
        if settle_now:
            if item.state == DROPPED and not future.set_running_or_notify_cancel():
                return False  # it had been cancelled meanwhile
            future.set_exception(_not_started())
        return True

    def shutdown(self, wait: bool, cancel_futures: bool, kill_workers: bool) -> None:
        cancelled: list[_WorkItem] = []
        with self.lock:
            self.is_shutdown = True
            if cancel_futures or kill_workers:
                while self.pending:
                    item = self.pending.popleft()
                    if item.state == PENDING:
                        item.state = DROPPED
                        self.items.pop(item.future, None)
                        cancelled.append(item)
            doomed = self.pool if kill_workers else None
            if kill_workers:
                if not self.closed:
                    self.closed = True  # nothing is launched any more
                    self.closed_event.set()
            elif not self.pending and not self.closed:
                self._close()
        self._wake_delivery()  # it may be waiting with nothing left to do
        for item in cancelled:
            item.future.cancel()
            item.future.set_running_or_notify_cancel()  # tell wait()/as_completed()
        if doomed is not None:
            doomed.terminate()  # running calls fail with PoolTerminated
        if wait:
            delivery = self.delivery
            if delivery is threading.current_thread():
                raise RuntimeError("cannot join current thread")
            self.closed_event.wait()
            if self.pool is not None:
                self.pool.join()
            if delivery is not None:
                delivery.join()

    def shutdown_nowait(self) -> None:
        """The finalizer of a garbage-collected executor: let its calls finish
        (nothing in a forked child's copy: its lock may be held by a parent
        thread the child does not have, and the pool is the parent's)."""
        if self.pid == os.getpid():
            self.shutdown(False, False, False)

    def _close(self) -> None:  # lock held
        self.closed = True
        if self.pool is not None:
            self.pool.close()
        self.closed_event.set()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            pool, pending = self.pool, sum(1 for item in self.pending if item.state == PENDING)
        stats = pool.stats() if pool is not None else {}
        # The pool runs every call as run_call, whose outcome (returned or
        # raised) travels inside its result: its own tally names run_call and
        # counts every call as a success.  The core's names the submitted
        # functions; a call counts as started once a worker runs its job, and
        # ends with its job's run time (job_done's seconds: the worker's own
        # measure, the one the pool's tally uses; a map's chunk is one job).
        if pool is not None:
            running = {worker["job"] for worker in stats.get("workers", ()) if worker.get("job")}
            with self.lock:
                tally = self.tally
                if running:
                    for item in self.items.values():
                        if item.seq in running and not item.counted and item.state == LAUNCHED:
                            item.counted = True
                            tally.started(item.name)
                stats["tasks"] = tally.snapshot()
        stats["pending"] = pending
        return stats


def _at_exit() -> None:
    """Before the interpreter joins its threads: let every executor left open
    finish what was submitted (the standard library does the same)."""
    global _interpreter_exiting
    _interpreter_exiting = True
    for core in list(_live_cores):
        if core.pid == os.getpid():  # not a forked child's copy
            core.shutdown(True, False, False)


# Like concurrent.futures: run before the interpreter joins non-daemon threads
# (and before atexit, which would terminate the pools).
_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    _register(_at_exit)
else:  # pragma: no cover - every supported Python has it
    import atexit

    atexit.register(_at_exit)


def _chunks(iterables: tuple[Iterable[Any], ...], size: int) -> Iterator[tuple[Any, ...]]:
    it = zip(*iterables, strict=False)  # the shortest input ends it, as map()
    while True:
        chunk = tuple(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


class _ItemCounter:
    """``poll`` of a map's :class:`~poolx.engine.progress.Tracker`: on the
    tracker's thread, counts the chunks whose futures are done, in order,
    from the first one not counted yet; finishes the tracker once all are.
    The threads that complete futures pay nothing for the bar.  A chunk
    done out of order is counted once those before it are; a cancelled
    one counts as not run."""

    def __init__(self, sizes: list[int]) -> None:
        self._futures: list[Future | None] | None = None  # until every chunk is submitted
        self._sizes = sizes
        self._next = 0

    def watch(self, futures: list[Future]) -> None:
        """Every chunk is submitted: count them from now on."""
        self._futures = list(futures)

    def __call__(self, tracker: Tracker) -> None:
        futures, sizes, i = self._futures, self._sizes, self._next
        if futures is None:
            return
        while i < len(futures):
            future = futures[i]
            assert future is not None
            if not future.done():
                break
            try:
                failed = future.exception() is not None
            except CancelledError:
                pass  # not run: not counted
            else:
                tracker.count(sizes[i], sizes[i] if failed else 0)
            futures[i] = None  # the counter keeps no result alive
            i += 1
        self._next = i
        if i == len(futures):
            tracker.finish()


def _map_results(futures: list[Future], end_time: float | None,
                 tracker: Tracker | None = None) -> Iterator[Any]:
    """Yield every chunk's results in order; cancel what is left on the way
    out, and close the progress bar."""
    futures.reverse()
    try:
        while futures:
            future = futures.pop()
            try:
                if end_time is None:
                    chunk = future.result()
                else:
                    chunk = future.result(end_time - time.monotonic())
            finally:
                future.cancel()
                del future
            chunk.reverse()  # pop from the end: no reference kept to what was yielded
            while chunk:
                yield chunk.pop()
    finally:
        for future in futures:
            future.cancel()
        if tracker is not None:
            tracker.close()


class ProcessPoolExecutor(Executor):
    """``concurrent.futures.ProcessPoolExecutor`` on poolx's engine.

    The standard library's constructor, methods and errors, plus per-task
    time and memory limits, lambdas, :meth:`terminate` and :meth:`schedule`.
    A worker that dies fails only the future it was running, with
    :class:`~poolx.exceptions.WorkerLostError` (a ``BrokenProcessPool``),
    and the executor stays usable — the one intended difference.

    Args:
        max_workers: number of worker processes (default ``os.cpu_count()``).
        mp_context: a ``multiprocessing`` context; by default the program's
            one, or ``spawn`` when ``max_tasks_per_child`` is given (as the
            standard library).  ``fork`` is accepted with
            ``max_tasks_per_child`` (the standard library refuses it).
        initializer: called as ``initializer(*initargs)`` once in each worker;
            if it keeps failing, pending futures fail with
            :class:`~poolx.exceptions.BrokenPoolError` (a ``BrokenProcessPool``)
            and ``submit`` raises it.
        initargs: the positional arguments of ``initializer`` (pickled to
            each worker).
        max_tasks_per_child: calls a worker runs before it is replaced.
        timeout: hard time limit (s) of every call; past it the worker is
            killed and the future fails with
            :class:`~poolx.exceptions.TimeLimitExceeded`.
        soft_timeout: soft limit (s): :class:`~poolx.exceptions.SoftTimeLimitExceeded`
            is raised inside the call.
        memory_limit: bytes (or ``"512MB"``) a worker may use during a call;
            over it the worker is killed and the future fails with
            :class:`~poolx.exceptions.MemoryLimitExceeded`.
        memory_poll_interval: how often (s) memory is sampled for ``memory_limit``.
        max_memory_per_child: KiB; a worker above it after a call retires.
        on_process_up, on_process_down, on_process_exit: as :class:`poolx.Pool`'s.
        on_timeout_set: ``f(future, soft, hard)`` when a call with limits is
            sent to a worker.
        on_timeout_cancel: ``f(future)`` when a call with limits finished in
            time.
        shm_threshold: as :class:`poolx.Pool`'s: calls and results of at
            least this many bytes travel through shared memory
            (:doc:`shared-memory`); ``None`` keeps them on the pipe.

    Workers start at the first :meth:`submit`, as the standard library's do
    (with ``fork``, they see the parent as it is then).
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] = (),
        *,
        max_tasks_per_child: int | None = None,
        timeout: float | None = None,
        soft_timeout: float | None = None,
        memory_limit: int | str | None = None,
        memory_poll_interval: float = 0.05,
        max_memory_per_child: int | None = None,
        on_process_up: Callable[[Any], Any] | None = None,
        on_process_down: Callable[[Any], Any] | None = None,
        on_process_exit: Callable[[int, int], Any] | None = None,
        on_timeout_set: Callable[[Future, Any, Any], Any] | None = None,
        on_timeout_cancel: Callable[[Future], Any] | None = None,
        shm_threshold: int | str | None = payload.DEFAULT_THRESHOLD,
    ) -> None:
        # The standard library's checks, in its order and with its messages.
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        else:
            if max_workers <= 0:
                raise ValueError("max_workers must be greater than 0")
            checks.check_count("max_workers", max_workers, 1)
        if mp_context is None:
            import multiprocessing

            if max_tasks_per_child is not None:
                mp_context = multiprocessing.get_context("spawn")
            else:
                mp_context = multiprocessing.get_context()
        mp_context.get_start_method(allow_none=False)  # as the standard library: a context or an error now
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        # poolx's own arguments, checked now although the pool starts later.
        for name, value in (("on_process_up", on_process_up), ("on_process_down", on_process_down),
                            ("on_process_exit", on_process_exit),
                            ("on_timeout_set", on_timeout_set),
                            ("on_timeout_cancel", on_timeout_cancel)):
            checks.check_callable(name, value)
        checks.check_count("max_memory_per_child", max_memory_per_child, 1, allow_none=True)
        pool_kwargs = {
            "maxtasksperchild": max_tasks_per_child,
            "context": mp_context,
            "timeout": checks.check_seconds("timeout", timeout),
            "soft_timeout": checks.check_seconds("soft_timeout", soft_timeout),
            "memory_limit": checks.parse_size("memory_limit", memory_limit),
            "memory_poll_interval": checks.check_seconds("memory_poll_interval",
                                                         memory_poll_interval),
            "max_memory_per_child": max_memory_per_child,
            "on_process_up": on_process_up,
            "on_process_down": on_process_down,
            "on_process_exit": on_process_exit,
            "shm_threshold": checks.parse_size("shm_threshold", shm_threshold),
        }
        self._max_workers = max_workers
        self._mp_context = mp_context
        self._core = _ExecutorCore(
            max_workers, pool_kwargs,
            pickling.portable(initializer) if initializer is not None else None,
            initargs, on_timeout_set, on_timeout_cancel,
        )
        # A collected executor lets its calls finish, then its workers exit.
        weakref.finalize(self, self._core.shutdown_nowait).atexit = False

    # ------------------------------------------------------------------ the standard library's API

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Schedule ``fn(*args, **kwargs)``; return a ``concurrent.futures.Future``.

        Raises ``RuntimeError`` after :meth:`shutdown`, and the pool's
        ``BrokenProcessPool`` error once it cannot start workers.
        """
        return self._core.submit(fn, args, kwargs, None)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1, progress_bar: ProgressOption = False) -> Iterator[Any]:
        """``map(fn, *iterables)`` in parallel; an iterator of results in order.

        As the standard library: the input is read and submitted at once;
        ``timeout`` (s, from this call) makes the iterator raise
        ``TimeoutError``; the first failing call's exception is raised at its
        position; ``chunksize`` items travel as one call (the executor's
        time and memory limits then apply per chunk).

        ``progress_bar`` (poolx): ``True``, or a dict of tqdm options, shows
        a bar counting the items as they finish (:doc:`observing`); it closes
        when the iterator ends (exhausted, an error, the timeout, or closed)
        or, if nobody iterates, once every call is done.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end_time = None if timeout is None else timeout + time.monotonic()
        fn = pickling.portable(fn)
        submit = self._core.submit
        if progress_bar is False:
            futures = [submit(run_chunk, (fn, chunk), {}, None) for chunk in _chunks(iterables, chunksize)]
            return _map_results(futures, end_time)
        chunks = list(_chunks(iterables, chunksize))
        sizes = [len(chunk) for chunk in chunks]
        counter = _ItemCounter(sizes)
        tracker = open_tracker(progress_bar, sum(sizes), "progress_bar", counter)
        if tracker is None:
            return _map_results([submit(run_chunk, (fn, chunk), {}, None) for chunk in chunks], end_time)
        try:
            futures = [submit(run_chunk, (fn, chunk), {}, None) for chunk in chunks]
        except BaseException:
            tracker.close()
            raise
        del chunks
        counter.watch(futures)
        return _map_results(futures, end_time, tracker)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False,
                 kill_workers: bool = False) -> None:
        """Accept no more calls and release the workers once they are done.

        ``wait``: return only when every submitted call has finished and the
        workers have exited (``wait=False`` returns at once; calls still run).
        ``cancel_futures``: cancel the calls not yet handed to a worker.
        ``kill_workers`` (poolx, as loky's): cancel those and stop the running
        calls now (their futures fail with
        :class:`~poolx.exceptions.PoolTerminated`); returns once the workers
        are gone.
        """
        self._core.shutdown(wait, cancel_futures, kill_workers)

    # ------------------------------------------------------------------ poolx's extensions

    def schedule(self, fn: Callable[..., Any], args: Iterable[Any] = (),
                 kwargs: dict[str, Any] | None = None, *, timeout: float | None = None,
                 soft_timeout: float | None = None,
                 memory_limit: int | str | None = None) -> Future:
        """Like :meth:`submit`, with limits for this call (pebble's shape).

        Each limit overrides the executor's default.

        :param fn: the function to call in a worker.
        :param args: its positional arguments.
        :param kwargs: its keyword arguments.
        :param timeout: hard limit (s); past it the worker is killed and the
            future fails with :class:`~poolx.exceptions.TimeLimitExceeded`.
        :param soft_timeout: soft limit (s):
            :class:`~poolx.exceptions.SoftTimeLimitExceeded` is raised inside
            the call.
        :param memory_limit: bytes or ``"512MB"``; over it the future fails
            with :class:`~poolx.exceptions.MemoryLimitExceeded`.
        :returns: a :class:`concurrent.futures.Future`.
        """
        limits = (checks.check_seconds("soft_timeout", soft_timeout),
                  checks.check_seconds("timeout", timeout),
                  checks.parse_size("memory_limit", memory_limit))
        return self._core.submit(fn, tuple(args), dict(kwargs or {}),
                                 None if limits == (None, None, None) else limits)

    def terminate(self, future: Future) -> bool:
        """Stop ``future``'s call now; it fails with :class:`~poolx.exceptions.Terminated`.

        A running call's worker is killed (and replaced); ``exc.started`` is
        True.  A call that has not started never will (``exc.started`` is
        False).  Returns False, doing nothing, if the future is already done
        (or was not made by this executor).
        """
        return self._core.terminate(future)

    def stats(self) -> dict[str, Any]:
        """The pool's :meth:`poolx.Pool.stats` (once workers have started),
        and ``pending``: calls waiting in the executor, not yet handed to the
        pool.  Its ``tasks`` count and time the calls per submitted function
        (a ``map``'s chunks under the mapped function), as the pool's do per
        job (see :doc:`metrics`)."""
        return self._core.stats()

    def __repr__(self) -> str:
        core = self._core
        state = "shutdown" if core.is_shutdown else "running"
        return (f"<{type(self).__module__}.{type(self).__qualname__} "
                f"max_workers={self._max_workers} state={state}>")

"""Per-task-name counts and run times: the one place they are kept (layer L0).

Who owns what: a :class:`TaskTally` belongs to exactly one owner, which
calls it from one thread at a time (it has no lock of its own): the
engine's supervisor keeps one for ``poolx.Pool`` (tasks named after their
function, on the supervisor thread), the consumer keeps one for a worker
pool (tasks named as the broker names them, under the consumer's lock),
and ``poolx.ProcessPoolExecutor`` keeps one (calls named after the
submitted function, under its core's lock, with the run times its pool's
supervisor measured).
Their ``stats()`` publish :meth:`TaskTally.snapshot` under ``"tasks"``;
:mod:`poolx.metrics` turns that snapshot into Prometheus metrics at scrape
time, so nothing is counted twice.

*Started* is counted once per task, when its owner first sees its worker
running it (a stats snapshot: the engine's worker slot, not merely a job
sent to the worker) or when it ends after having started, whichever comes
first: no extra message per task, and the count never goes down.  A task
that never started (cancelled while queued, given back to its queue, or
failed because the pool is broken) counts nowhere here.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from poolx import exceptions
from poolx.exceptions import (
    MemoryLimitExceeded,
    PoolTerminated,
    RestartFreqExceeded,
    SoftTimeLimitExceeded,
    Terminated,
    TimeLimitExceeded,
)

__all__ = ["TaskTally", "DURATION_BUCKETS", "FAILURE_OUTCOMES", "OTHER", "failure_outcome",
           "raised_outcome", "task_name"]

DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)
"""Upper bounds (seconds) of the run-time histogram's buckets; the last
bucket (``+Inf``) is implied.  Prometheus's default buckets stop at 10 s;
pool tasks often run minutes."""

FAILURE_OUTCOMES: tuple[str, ...] = ("error", "timeout", "memory", "lost", "terminated")
"""How a started task can fail: it raised (``error``), went over a soft or
hard time limit (``timeout``) or its memory limit (``memory``), its worker
died (``lost``), or it was killed on request (``terminated``:
``terminate_job``, or the pool terminated while it ran)."""

MAX_NAMES = 1000
"""Distinct task names kept apart; later names are counted under
:data:`OTHER`, so that generated functions cannot grow the tally (nor a
scrape) without bound."""

OTHER = "(other)"


def task_name(func: Any) -> str:
    """The name a task function is counted under: ``module.qualname``
    (a :func:`functools.partial` under its function's name, any other
    callable under its type's)."""
    qualname = getattr(func, "__qualname__", None)
    if qualname.__class__ is not str:  # (the common case first: it runs once per job)
        inner = getattr(func, "func", None)  # functools.partial
        func = inner if callable(inner) else type(func)
        qualname = getattr(func, "__qualname__", None)
        if qualname.__class__ is not str:
            func = type(func)
            qualname = func.__qualname__
    module = getattr(func, "__module__", None)
    return f"{module}.{qualname}" if module.__class__ is str else qualname


def failure_outcome(error: BaseException) -> str | None:
    """The :data:`FAILURE_OUTCOMES` label of a started task that failed with
    ``error``, or None if ``error`` says the task never started."""
    if isinstance(error, PoolTerminated):
        return "terminated" if error.started is not False else None
    if isinstance(error, Terminated):
        return "terminated"
    if isinstance(error, (TimeLimitExceeded, SoftTimeLimitExceeded)):
        return "timeout"
    if isinstance(error, MemoryLimitExceeded):
        return "memory"
    if isinstance(error, RestartFreqExceeded):
        return None
    # WorkerLostError and BrokenPoolError are created on first use (they are
    # concurrent.futures' BrokenProcessPool, which a pool that never fails
    # must not import): before that, no error can be one of them.
    created = vars(exceptions)
    lost, broken = created.get("WorkerLostError"), created.get("BrokenPoolError")
    if lost is not None and isinstance(error, lost):
        return "lost"
    if broken is not None and isinstance(error, broken):
        return None
    return "error"


def raised_outcome(error: BaseException) -> str:
    """The outcome of a task that raised ``error`` itself: ``timeout`` for
    the soft time limit's exception, ``error`` for anything else."""
    return "timeout" if isinstance(error, SoftTimeLimitExceeded) else "error"


class _Counts:
    __slots__ = ("started", "succeeded", "failed", "buckets", "seconds", "timed")

    def __init__(self) -> None:
        self.started = 0
        self.succeeded = 0
        self.failed = dict.fromkeys(FAILURE_OUTCOMES, 0)
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)  # not cumulative; the last is +Inf
        self.seconds = 0.0
        self.timed = 0


class TaskTally:
    """Started, succeeded and failed tasks (by outcome) and a histogram of
    run times, per task name.  See the module docstring for who calls it."""

    __slots__ = ("_names", "_max_names")

    def __init__(self, max_names: int = MAX_NAMES) -> None:
        self._names: dict[str, _Counts] = {}
        self._max_names = max_names

    def _counts(self, name: str) -> _Counts:
        counts = self._names.get(name)
        if counts is None:
            if len(self._names) >= self._max_names:
                name = OTHER
                counts = self._names.get(name)
            if counts is None:
                counts = self._names[name] = _Counts()
        return counts

    def started(self, name: str) -> None:
        """A task named ``name`` was seen running (count it once)."""
        self._counts(name).started += 1

    def ended(self, name: str, outcome: str | None, seconds: float | None = None,
              counted: bool = True) -> None:
        """A started task ended: ``outcome`` is ``None`` for success or one of
        :data:`FAILURE_OUTCOMES`; ``seconds`` its run time if known (it goes
        into the histogram); ``counted`` whether :meth:`started` was already
        called for it."""
        counts = self._counts(name)
        if not counted:
            counts.started += 1
        if outcome is None:
            counts.succeeded += 1
        else:
            counts.failed[outcome] += 1
        if seconds is not None:
            counts.buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1
            counts.seconds += seconds
            counts.timed += 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per task name: ``started``, ``succeeded``, ``failed`` (a dict by
        outcome) and ``duration``: ``buckets`` (cumulative counts, one per
        :data:`DURATION_BUCKETS` bound, then ``+Inf``), ``sum`` (seconds)
        and ``count``."""
        out = {}
        for name, counts in self._names.items():
            cumulative, total = [], 0
            for n in counts.buckets:
                total += n
                cumulative.append(total)
            out[name] = {
                "started": counts.started,
                "succeeded": counts.succeeded,
                "failed": dict(counts.failed),
                "duration": {"buckets": cumulative, "sum": counts.seconds, "count": counts.timed},
            }
        return out

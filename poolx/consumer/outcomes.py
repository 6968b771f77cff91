"""What a task's result is, given what the pool said (layer L6).

Owned here: pure functions from the pool's answer for one task to what the
consumer does with it — :class:`Store` a value or a
:class:`~poolx.task.TaskFailure`, or :class:`GiveBack` a task that never
started (to the front of the queue).  They decide by exception *type*
(:mod:`poolx.exceptions`), never by message text, and touch nothing: the
consumer (:mod:`poolx.consumer.adapter`) carries the decision out, and the
unit tests call them directly.

=====================================  ======================================
the pool says                          the task's outcome
=====================================  ======================================
a value / a TaskFailure from a worker  stored (named after the consumed queue)
SoftTimeLimitExceeded                  TaskFailure "SoftTimeLimitExceeded: soft time limit (S s) exceeded"
TimeLimitExceeded                      TaskFailure "TimeLimitExceeded: hard time limit (S s) exceeded; ..."
MemoryLimitExceeded                    TaskFailure "MemoryLimitExceeded: ..."
WorkerLostError                        TaskExpired "WorkerLostError: ..." (WorQ reports lost workers so)
PoolTerminated, started=False          given back: it never ran
PoolTerminated, started (or unknown)   TaskFailure "Terminated: the worker pool was stopped while the task ran"
Terminated (this job, by a signal)     TaskFailure "Terminated: the task was terminated (signal N)"
BrokenPoolError, RestartFreqExceeded   given back, and the consumer stops taking tasks
PoolNotRunning (at submission)         given back; the consumer stops taking tasks
anything else                          TaskFailure "Type: message"
anything, for a task that was          TaskCancelled "Cancelled: ..." (:func:`cancelled`:
cancelled (its worker was killed)      the canceller stored it already; this one is dropped)
=====================================  ======================================

A ``PoolTerminated`` whose ``started`` is unknown fails rather than going
back: a task that may have run must never run twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from poolx.exceptions import (
    BrokenPoolError,
    MemoryLimitExceeded,
    PoolTerminated,
    RestartFreqExceeded,
    SoftTimeLimitExceeded,
    Terminated,
    TimeLimitExceeded,
    WorkerLostError,
)
from poolx.task import (
    FunctionTask,
    TaskCancelled,
    TaskExpired,
    TaskFailure,
    error_text,
    judge_failure,
)

__all__ = [
    "Store",
    "GiveBack",
    "Outcome",
    "from_worker",
    "from_pool_error",
    "not_running",
    "soft_limit_failure",
    "cancelled",
]


@dataclass(frozen=True)
class Store:
    """Store ``value`` (a result or a :class:`~poolx.task.TaskFailure`) as the
    task's result."""

    value: Any


@dataclass(frozen=True)
class GiveBack:
    """The task never started: return it to the queue.

    :ivar why: For the log.
    :ivar broken: Set when the pool cannot run tasks any more: the consumer
        stops taking them.
    """

    why: str
    broken: BaseException | None = None


Outcome = Store | GiveBack


def from_worker(task: FunctionTask, queue_name: str, value: Any) -> Store:
    """A worker returned ``value`` (the task's result or its failure)."""
    if isinstance(value, TaskFailure) and value.task_id == task.id and value.queue != queue_name:
        # the worker's broker may serve another queue name: say which one ran it
        value = value.replace(queue=queue_name)  # keeps retryable: a retry still happens
    return Store(value)


def from_pool_error(task: FunctionTask, queue_name: str, error: BaseException) -> Outcome:
    """The pool failed the task's job with ``error`` (see the module table).

    A stored failure is marked retryable when the task's
    :class:`~poolx.task.Retry` policy covers ``error`` (time and memory
    limits and lost workers only with ``on_timeout=True``)."""
    outcome = _from_pool_error(task, queue_name, error)
    if isinstance(outcome, Store) and isinstance(outcome.value, TaskFailure) and _judged(error):
        judge_failure(task, outcome.value, error)
    return outcome


def _judged(error: BaseException) -> bool:
    """Is ``error`` one a Retry policy may retry: a time or memory limit or
    a lost worker (with ``on_timeout``)?  Never anything else the pool
    reports — above all a result the worker could not send back: the task
    ran to its end, and running it again would repeat its side effects."""
    return isinstance(error, (TimeLimitExceeded, SoftTimeLimitExceeded, MemoryLimitExceeded,
                              WorkerLostError))


def _from_pool_error(task: FunctionTask, queue_name: str, error: BaseException) -> Outcome:

    def failed(text: str, kind: type[TaskFailure] = TaskFailure) -> Store:
        return Store(kind(task.name, queue_name, task.id, text))

    if isinstance(error, (BrokenPoolError, RestartFreqExceeded)):
        return GiveBack(f"the pool is broken ({error})", broken=error)
    if isinstance(error, PoolTerminated):
        if error.started is False:
            return GiveBack("the pool was terminated before the task started")
        return failed("Terminated: the worker pool was stopped while the task ran")
    if isinstance(error, Terminated):
        signum = error.args[0] if error.args else None
        sig = f" (signal {signum})" if isinstance(signum, int) else ""
        return failed(f"Terminated: the task was terminated{sig}")
    if isinstance(error, TimeLimitExceeded):
        limit = task.timeout if task.timeout is not None else _limit_of(error)
        return failed(f"TimeLimitExceeded: hard time limit ({_seconds(limit)}) exceeded; "
                      "the worker was killed")
    if isinstance(error, SoftTimeLimitExceeded):
        return Store(soft_limit_failure(task, queue_name))
    if isinstance(error, MemoryLimitExceeded):
        return failed(error_text(error))
    if isinstance(error, WorkerLostError):
        return failed(f"WorkerLostError: {error}", TaskExpired)
    return failed(error_text(error))  # e.g. a result the worker could not send back


def not_running(error: BaseException, stopping: bool) -> GiveBack:
    """Submitting the task failed because the pool is closed or terminated
    (:class:`~poolx.exceptions.PoolNotRunning`); unless the consumer is
    stopping anyway, that breaks it."""
    broken = None if stopping else BrokenPoolError(f"the pool is not running: {error}")
    return GiveBack(f"the pool is not running ({error})", broken=broken)


def cancelled(task: FunctionTask, queue_name: str) -> Store:
    """The outcome of a task that was cancelled, whatever the pool said: its
    :class:`~poolx.task.TaskCancelled` (the backend kept the canceller's,
    so storing this one changes nothing there; it lets the backend forget
    the delivery)."""
    return Store(TaskCancelled(task.name, queue_name, task.id))


def soft_limit_failure(task: FunctionTask, queue_name: str) -> TaskFailure:
    """The failure of a task that did not catch its soft time limit."""
    limit = f" ({task.soft_timeout:g} s)" if task.soft_timeout is not None else ""
    return TaskFailure(task.name, queue_name, task.id,
                       f"SoftTimeLimitExceeded: soft time limit{limit} exceeded")


def _limit_of(error: TimeLimitExceeded) -> float | None:
    value = error.args[0] if error.args else None
    return value if isinstance(value, (int, float)) else None


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:g} s"

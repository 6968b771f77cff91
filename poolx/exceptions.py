"""Every exception poolx raises, under billiard's names.

The pool engine raises these through ``AsyncResult.get()`` as the real classes
(billiard wraps them in ``ExceptionWithTraceback``; poolx does not), so
``except TimeLimitExceeded:`` works.  ``TimeoutError`` is the standard
library's ``multiprocessing.TimeoutError`` so that code catching it keeps
working after switching imports.
"""

from __future__ import annotations

from multiprocessing import TimeoutError

__all__ = [
    "TimeoutError",
    "PoolError",
    "SoftTimeLimitExceeded",
    "TimeLimitExceeded",
    "WorkerLostError",
    "Terminated",
    "PoolTerminated",
    "PoolNotRunning",
    "RestartFreqExceeded",
    "MemoryLimitExceeded",
    "BrokenPoolError",
]


class PoolError(Exception):
    """Base class of the errors the pool itself produces for a job."""


class SoftTimeLimitExceeded(Exception):
    """Raised *inside* a task when its soft time limit expires.

    The task may catch it to clean up; if it does not finish before the hard
    limit, the worker is killed anyway.
    """

    def __str__(self) -> str:
        return super().__str__() or "soft time limit exceeded"


class TimeLimitExceeded(PoolError):
    """The job ran past its hard time limit; its worker was killed.

    ``args[0]`` is the limit in seconds (billiard's convention).
    """

    def __str__(self) -> str:
        if len(self.args) == 1 and isinstance(self.args[0], (int, float)):
            return f"hard time limit of {self.args[0]} s exceeded; the worker was killed"
        return super().__str__()


class WorkerLostError(PoolError):
    """The worker process running the job exited or was killed."""


class Terminated(PoolError):
    """The job was terminated on request (``terminate_job`` or ``terminate``).

    ``args[0]`` is the signal number used when one was sent.  ``started`` is
    True when the job had started running in a worker, False when it had
    not (it was queued or prefetched), None when unknown.
    """

    started: bool | None = None

    def __str__(self) -> str:
        if len(self.args) == 1 and isinstance(self.args[0], int):
            import signal

            try:
                name = signal.Signals(self.args[0]).name
            except ValueError:
                name = "unknown signal"
            return f"terminated by signal {self.args[0]} ({name})"
        return super().__str__()


class PoolTerminated(Terminated):
    """The job ended because the whole pool was terminated (``terminate()``,
    leaving a ``with`` block, or the pool being garbage collected), not
    because this job was targeted.  ``started`` says whether it had begun."""

    def __init__(self, started: bool | None = None) -> None:
        super().__init__("pool terminated")
        self.started = started

    def __reduce__(self) -> tuple[object, ...]:
        return type(self), (self.started,)


class PoolNotRunning(ValueError):
    """A job was submitted to a pool that was closed or terminated.

    A ``ValueError`` with the standard library's text ("Pool not running"),
    so code written for ``multiprocessing.Pool`` catches it unchanged.
    """

    def __init__(self, message: str = "Pool not running") -> None:
        super().__init__(message)


class RestartFreqExceeded(PoolError):
    """Workers died more than ``max_restarts`` times in ``max_restart_freq`` s."""


class BrokenPoolError(PoolError):
    """The pool cannot run jobs any more (e.g. every initializer failed).

    ``__cause__`` carries the underlying error when there is one.
    """


class MemoryLimitExceeded(PoolError):
    """The worker running the job went over the job's ``memory_limit``.

    ``rss`` is the observed resident set size in bytes, ``limit`` the limit.
    """

    def __init__(self, rss: int, limit: int, pid: int | None = None) -> None:
        super().__init__(rss, limit, pid)
        self.rss = rss
        self.limit = limit
        self.pid = pid

    def __str__(self) -> str:
        return (
            f"worker {self.pid} used {self.rss / 2**20:.1f} MiB, "
            f"over the job's memory limit of {self.limit / 2**20:.1f} MiB"
        )

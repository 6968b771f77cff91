"""Every exception poolx raises, under billiard's names.

The pool engine raises these through ``AsyncResult.get()`` as the real classes
(billiard wraps them in ``ExceptionWithTraceback``; poolx does not), so
``except TimeLimitExceeded:`` works.  ``TimeoutError`` is the standard
library's ``multiprocessing.TimeoutError`` so that code catching it keeps
working after switching imports.

:class:`WorkerLostError` and :class:`BrokenPoolError` are also subclasses of
``concurrent.futures.process.BrokenProcessPool``, so code written for the
standard library's ``ProcessPoolExecutor`` catches them unchanged (see
``docs/futures.rst``).  Those two classes are created on first access
(PEP 562): ``concurrent.futures`` imports ``logging``, and a worker process,
which imports this module but never raises them, should not pay for it.
"""

from __future__ import annotations

import threading
from multiprocessing import TimeoutError
from typing import TYPE_CHECKING, Any

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
    "ExtraNotInstalled",
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


class ExtraNotInstalled(ImportError):
    """A feature needs an optional dependency (a poolx "extra") that is not installed.

    An ``ImportError``, so ``except ImportError`` catches it as it catches
    any missing optional package; ``extra`` is the extra to install
    (``pip install 'poolx[EXTRA]'``), ``name`` the missing package.
    """

    def __init__(self, feature: str, package: str, extra: str) -> None:
        super().__init__(f"{feature} needs {package}, which is not installed: "
                         f"pip install 'poolx[{extra}]'", name=package)
        self.feature = feature
        self.extra = extra

    def __reduce__(self) -> tuple[object, ...]:
        return type(self), (self.feature, self.name, self.extra)


# -- the two classes that are also concurrent.futures' BrokenProcessPool ------------

_LAZY_LOCK = threading.Lock()

if TYPE_CHECKING:  # what __getattr__ creates on first access, for type checkers and linters
    from concurrent.futures.process import BrokenProcessPool

    class WorkerLostError(PoolError, BrokenProcessPool): ...

    class BrokenPoolError(PoolError, BrokenProcessPool): ...


def _define_broken_process_pool_subclasses() -> None:
    from concurrent.futures.process import BrokenProcessPool

    class WorkerLostError(PoolError, BrokenProcessPool):
        """The worker process running the job exited or was killed.

        Also a ``concurrent.futures.process.BrokenProcessPool``: the standard
        library's executor raises that when a worker dies (and breaks the
        whole executor); poolx fails only the job that worker was running.
        """

    class BrokenPoolError(PoolError, BrokenProcessPool):
        """The pool cannot run jobs any more (e.g. every initializer failed).

        ``__cause__`` carries the underlying error when there is one.  Also a
        ``concurrent.futures.process.BrokenProcessPool``, which the standard
        library's executor raises in the same situations.
        """

    for cls in (WorkerLostError, BrokenPoolError):
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__
        globals()[cls.__name__] = cls


def __getattr__(name: str) -> Any:
    if name in ("WorkerLostError", "BrokenPoolError"):
        with _LAZY_LOCK:  # two threads must never create two different classes
            if name not in globals():
                _define_broken_process_pool_subclasses()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

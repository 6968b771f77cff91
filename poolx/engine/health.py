"""Pool health: when do worker deaths mean the pool cannot work any more?

Who owns what: one :class:`Health` belongs to the
:class:`~poolx.engine.supervisor.Supervisor` and is told, on its thread, when
a worker became ready, when its initializer reported a failure, and when it
exited (and how).  It keeps the two breakers and nothing else; it never
touches workers or jobs.  When a breaker trips it *returns* the error the pool
is broken with, and the supervisor fails the queued jobs with it.

* Restart frequency (billiard's ``max_restarts``/``max_restart_freq``): more
  than ``max_restarts`` unexpected deaths of *ready* workers within
  ``max_restart_freq`` seconds give :class:`RestartFreqExceeded`.
* Start failures: a worker that dies before it reports READY — its
  initializer raised, or it died without a word (an initializer that calls
  ``os._exit``; under spawn or forkserver, a main module that cannot be
  imported in the child) — would be replaced by another that dies the same
  way, forever.  After ``start_failure_limit`` such deaths in a row, while no
  worker is ready, the pool is broken with a :class:`BrokenPoolError` that
  carries the initializer's exception or names the exit code.  A worker
  killed from outside while it starts (``kill -9``, the OOM killer, a
  process-group ``SIGTERM``: the signals in :data:`OUTSIDE_KILLS`) is simply
  replaced: that says nothing about whether workers can start, whereas a
  worker that crashes by itself (``SIGSEGV``, ``SIGABRT``...) would crash
  again.

With ``max_restarts`` set, a worker that dies before it is ready counts
as a restart instead (the user's rule wins, as in billiard), and the
start-failure breaker stays out of it.

An exit the supervisor caused (it killed the worker: time or memory limit,
``terminate_job``, ``terminate``) counts for neither.
"""

from __future__ import annotations

import signal
import time
from collections import deque
from collections.abc import Callable

from poolx import exceptions
from poolx.exceptions import RestartFreqExceeded

# Consecutive start failures (with no worker ready) after which the pool
# declares itself broken instead of respawning forever.
START_FAILURE_LIMIT = 3

# Signals that other processes send (a user, the OOM killer, a process-group
# signal); a starting worker they kill is not a start failure.
OUTSIDE_KILLS = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


def describe_exit(exitcode: int | None) -> str:
    """``exitcode 1`` or ``signal 9 (SIGKILL)``, as error messages say it."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        return f"signal {-exitcode} ({name})"
    return f"exitcode {exitcode}"


class Health:
    """The restart-frequency and start-failure breakers of one pool."""

    def __init__(
        self,
        max_restarts: int | None,
        max_restart_freq: float,
        start_failure_limit: int = START_FAILURE_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_restarts = max_restarts
        self.max_restart_freq = max_restart_freq
        self.start_failure_limit = start_failure_limit
        self._clock = clock
        self.restarts = 0  # unexpected deaths of ready workers (for stats)
        self._restart_times: deque[float] = deque()
        self.start_failures = 0  # consecutive workers that died before READY
        self._init_errors: dict[int, BaseException | None] = {}  # pid -> what it reported

    def worker_ready(self) -> None:
        """A worker finished its initializer: starting workers works."""
        self.start_failures = 0

    def init_failed(self, pid: int, error: BaseException | None) -> None:
        """Worker ``pid`` reported that its initializer raised ``error``
        (None if the error could not be rebuilt); its exit follows."""
        self._init_errors[pid] = error

    def worker_exited(
        self, pid: int, exitcode: int | None, *, ready: bool, expected: bool, others_ready: bool
    ) -> BaseException | None:
        """Worker ``pid`` is gone; return the error that breaks the pool, if any.

        ``ready``: it had reported READY.  ``expected``: the supervisor
        killed it.  ``others_ready``: some live worker is ready.
        """
        reported = pid in self._init_errors
        init_error = self._init_errors.pop(pid, None)
        if expected:
            return None
        if not ready:
            if self.max_restarts is not None:
                # The user's own rule wins (billiard): a worker that could not
                # start is one more restart.
                return self._restarted()
            if exitcode is not None and exitcode < 0 and -exitcode in OUTSIDE_KILLS:
                return None
            return self._start_failed(exitcode, reported, init_error, others_ready)
        if exitcode == 0:
            return None  # it retired (maxtasksperchild, memory, shrink...)
        return self._restarted()

    def _start_failed(self, exitcode: int | None, reported: bool,
                      init_error: BaseException | None, others_ready: bool) -> BaseException | None:
        self.start_failures += 1
        n = self.start_failures
        if n < self.start_failure_limit or others_ready:
            return None
        if reported:
            error = exceptions.BrokenPoolError(f"the worker initializer failed {n} times in a row: {init_error!r}")
            error.__cause__ = init_error
            return error
        return exceptions.BrokenPoolError(
            f"{n} workers in a row exited before they were ready (the last with "
            f"{describe_exit(exitcode)}) and reported no error; under spawn or forkserver "
            "this happens when the main module cannot be imported in a worker"
        )

    def _restarted(self) -> BaseException | None:
        self.restarts += 1
        limit = self.max_restarts
        if limit is None:
            return None
        now = self._clock()
        times = self._restart_times
        times.append(now)
        while times and times[0] < now - self.max_restart_freq:
            times.popleft()
        if len(times) > limit:
            return RestartFreqExceeded(
                f"{len(times)} worker restarts in {self.max_restart_freq} s (max_restarts={limit})"
            )
        return None

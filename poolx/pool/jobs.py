"""Jobs: the unit the supervisor dispatches to one worker, and its states.

A *job* is one ``apply_async`` call or one chunk of a ``map``/``imap``.  The
supervisor thread is the only code that changes a job's state, and every job
reaches exactly one terminal state — the invariant the property tests check::

    queued -> sent -> accepted -> done | failed | timed_out | lost | cancelled
       ^        |
       +--------+   (re-queued when its worker died before starting it)

``accepted`` is recorded when the worker reports it (only for jobs that need
it: accept callbacks); otherwise a job goes straight from ``sent`` to its end.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from poolx.pool.results import JobSink


class JobState(enum.Enum):
    QUEUED = "queued"
    SENT = "sent"
    ACCEPTED = "accepted"
    DONE = "done"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    LOST = "lost"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {JobState.DONE, JobState.FAILED, JobState.TIMED_OUT, JobState.LOST, JobState.CANCELLED}
)

_ALLOWED = {
    JobState.QUEUED: frozenset({JobState.SENT}) | _TERMINAL,
    JobState.SENT: frozenset({JobState.ACCEPTED, JobState.QUEUED}) | _TERMINAL,
    JobState.ACCEPTED: frozenset({JobState.QUEUED}) | _TERMINAL,
}


class JobStateError(RuntimeError):
    """An illegal state transition: a bug in poolx, never a user error."""


class Job:
    """One dispatchable unit of work and everything the supervisor tracks for it."""

    __slots__ = (
        "seq",
        "sink",
        "index",
        "payload",
        "flags",
        "state",
        "worker",
        "soft_timeout",
        "timeout",
        "memory_limit",
        "soft_fired",
    )

    def __init__(
        self,
        seq: int,
        sink: JobSink,
        index: int,
        payload: bytes,
        flags: int = 0,
        soft_timeout: float | None = None,
        timeout: float | None = None,
        memory_limit: int | None = None,
    ) -> None:
        self.seq = seq
        self.sink = sink
        self.index = index
        self.payload: bytes | None = payload
        self.flags = flags
        self.state = JobState.QUEUED
        self.worker: Any = None
        self.soft_timeout = soft_timeout
        self.timeout = timeout
        self.memory_limit = memory_limit
        self.soft_fired = False

    def move(self, new: JobState) -> None:
        if new not in _ALLOWED.get(self.state, ()):
            raise JobStateError(f"job {self.seq}: illegal transition {self.state.value} -> {new.value}")
        self.state = new
        if new.terminal:
            self.payload = None  # drop the arguments as soon as the job is over
            self.worker = None

    @property
    def timed(self) -> bool:
        return self.soft_timeout is not None or self.timeout is not None

    def __repr__(self) -> str:
        return f"<Job {self.seq} #{self.index} {self.state.value}>"

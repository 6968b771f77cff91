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

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from poolx.engine.results import JobSink


class JobState:
    """One state of a job.  Plain objects rather than an Enum: the supervisor
    checks states several times per job, and Enum hashing is slow."""

    __slots__ = ("value", "code", "terminal")

    def __init__(self, value: str, code: int, terminal: bool) -> None:
        self.value = value
        self.code = code
        self.terminal = terminal

    def __repr__(self) -> str:
        return f"<JobState {self.value}>"

    QUEUED: ClassVar[JobState]
    SENT: ClassVar[JobState]
    ACCEPTED: ClassVar[JobState]
    DONE: ClassVar[JobState]
    FAILED: ClassVar[JobState]
    TIMED_OUT: ClassVar[JobState]
    LOST: ClassVar[JobState]
    CANCELLED: ClassVar[JobState]


for _code, (_name, _terminal) in enumerate([
    ("queued", False), ("sent", False), ("accepted", False), ("done", True),
    ("failed", True), ("timed_out", True), ("lost", True), ("cancelled", True),
]):
    setattr(JobState, _name.upper(), JobState(_name, _code, _terminal))

STATES = (JobState.QUEUED, JobState.SENT, JobState.ACCEPTED, JobState.DONE, JobState.FAILED,
          JobState.TIMED_OUT, JobState.LOST, JobState.CANCELLED)


def _mask(*states: JobState) -> int:
    return sum(1 << state.code for state in states)


_TERMINAL_MASK = _mask(*(state for state in STATES if state.terminal))
# _ALLOWED[code] is a bit mask of the states a job in state ``code`` may move to.
_ALLOWED = [0] * len(STATES)
_ALLOWED[JobState.QUEUED.code] = _mask(JobState.SENT) | _TERMINAL_MASK
_ALLOWED[JobState.SENT.code] = _mask(JobState.ACCEPTED, JobState.QUEUED) | _TERMINAL_MASK
_ALLOWED[JobState.ACCEPTED.code] = _mask(JobState.QUEUED) | _TERMINAL_MASK


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
        "name",
        "counted",
        "call",
        "waiting_bytes",
    )

    def __init__(
        self,
        seq: int,
        sink: JobSink,
        index: int,
        payload: bytes | None,
        flags: int = 0,
        soft_timeout: float | None = None,
        timeout: float | None = None,
        memory_limit: int | None = None,
        name: str = "",
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
        self.name = name  # what the task tally counts it under (poolx.tally.task_name)
        self.counted = False  # counted as started in the tally
        # A job submitted while many pickled arguments wait to be sent keeps
        # its call (func, args, kwds, mode) unpickled until the pool's
        # pickler thread pickled it (payload None until then); see
        # Supervisor.waiting_bytes and poolx.engine.late.
        self.call: tuple[Any, Any, Any, int] | None = None
        self.waiting_bytes = 0  # its pickled size while it counts in Supervisor.waiting_bytes

    def move(self, new: JobState) -> None:
        if not _ALLOWED[self.state.code] >> new.code & 1:
            raise JobStateError(f"job {self.seq}: illegal transition {self.state.value} -> {new.value}")
        self.state = new
        if new.terminal:
            self.payload = None  # drop the arguments as soon as the job is over
            self.call = None
            self.worker = None

    @property
    def timed(self) -> bool:
        return self.soft_timeout is not None or self.timeout is not None

    def __repr__(self) -> str:
        return f"<Job {self.seq} #{self.index} {self.state.value}>"

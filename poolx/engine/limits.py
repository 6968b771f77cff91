"""Time limits and memory limits of running jobs, kept by the supervisor.

Who owns what: :class:`LimitKeeper` belongs to the
:class:`~poolx.engine.supervisor.Supervisor` and runs only on its thread, from
the supervisor's timer heap.  It reads each worker's shared slot (which job
is running, since when) to time jobs from their real start, marks the soft
limit's target job in the slot *before* signalling the worker, and samples
the memory of workers running jobs that have a memory limit.  Ending a job
or killing a worker goes back through the supervisor.
"""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING, Any

from poolx.engine import memory
from poolx.engine.jobs import Job, JobState
from poolx.engine.worker import RUNNING, SOFT_TARGET, STARTED_NS
from poolx.exceptions import MemoryLimitExceeded, TimeLimitExceeded

if TYPE_CHECKING:
    from poolx.engine.supervisor import Supervisor, WorkerHandle


class LimitKeeper:
    """Deadlines and memory sampling for the jobs of one pool."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor

    def arm_timeouts(self, job: Job, handle: WorkerHandle, now: float) -> None:
        first = min(t for t in (job.soft_timeout, job.timeout) if t is not None)
        self.sup.schedule(now + first, self.check_timeout, job, handle)
        if self.sup.config.on_timeout_set is not None:
            self.sup.runner.submit(self.sup.config.on_timeout_set, job.sink, job.soft_timeout, job.timeout)

    def check_timeout(self, job: Job, handle: WorkerHandle) -> None:
        if job.state.terminal or job.worker is not handle or handle.exited:
            return
        now = time.monotonic()
        slot = handle.slot
        if slot[RUNNING] != job.seq:
            # Not started yet (or finished, result on its way): it cannot expire
            # before now + its shortest limit.
            pending = [t for t in (None if job.soft_fired else job.soft_timeout, job.timeout) if t]
            if pending:
                self.sup.schedule(now + min(pending), self.check_timeout, job, handle)
            return
        started = slot[STARTED_NS] / 1e9
        if job.soft_timeout is not None and not job.soft_fired:
            deadline = started + job.soft_timeout
            if now < deadline:
                self.sup.schedule(deadline, self.check_timeout, job, handle)
                return
            job.soft_fired = True
            slot[SOFT_TARGET] = job.seq  # mark the target *before* signalling
            try:
                os.kill(handle.pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
            job.sink._job_timed_out(True, job.soft_timeout)
        if job.timeout is not None:
            deadline = started + job.timeout
            if now < deadline:
                self.sup.schedule(deadline, self.check_timeout, job, handle)
                return
            if not self.sup.kill_job(handle, job, "timeout"):
                return  # it finished at this very instant: its result is on the way
            job.sink._job_timed_out(False, job.timeout)
            self.sup._finish(job, JobState.TIMED_OUT, False, TimeLimitExceeded(job.timeout))

    def arm_memory_poll(self, handle: WorkerHandle) -> None:
        if handle.memory_timer is None:
            handle.memory_timer = self.sup.schedule(
                time.monotonic() + self.sup.config.memory_poll_interval, self.poll_memory, handle
            )

    def cancel_memory_poll(self, handle: WorkerHandle) -> None:
        self.sup.cancel_timer(handle.memory_timer)
        handle.memory_timer = None

    def poll_memory(self, handle: WorkerHandle) -> None:
        handle.memory_timer = None
        if handle.exited or handle.kill_reason:
            return
        job = handle.running_job()
        if job is not None and job.memory_limit is not None and not job.state.terminal:
            rss = usage_over(handle, job.memory_limit)
            if rss is not None and self.sup.kill_job(handle, job, "memory"):
                self.sup.stats_counters["memory_killed"] += 1
                self.sup._finish(job, JobState.FAILED, False,
                             MemoryLimitExceeded(rss, job.memory_limit, handle.pid))
                return
        if any(j.memory_limit is not None for j in handle.jobs.values()):
            self.arm_memory_poll(handle)


def _process(handle: WorkerHandle) -> Any:
    if handle.psutil is None:
        handle.psutil = memory.process(handle.pid)
    return handle.psutil


def rss(handle: WorkerHandle) -> int | None:
    """The worker's resident set size in bytes, or None if it is gone."""
    import psutil

    try:
        return _process(handle).memory_info().rss
    except psutil.Error:
        return None


def usage_over(handle: WorkerHandle, limit: int) -> int | None:
    """The worker's memory use if it is over ``limit`` (see :mod:`memory`)."""
    import psutil

    try:
        return memory.usage_over(_process(handle), limit)
    except psutil.Error:
        return None

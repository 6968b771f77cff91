"""Time limits and memory limits of running jobs, kept by the supervisor.

Who owns what: :class:`LimitKeeper` belongs to the
:class:`~poolx.engine.supervisor.Supervisor` and runs only on its thread,
from the supervisor's :class:`~poolx.engine.timers.TimerHeap`.  It owns its
own state — one deadline timer per job that has time limits, and per worker
the ``psutil`` process and the memory-poll timer — and drops it as soon as a
job ends (:meth:`LimitKeeper.job_ended`) or a worker is gone
(:meth:`LimitKeeper.worker_gone`), so a finished job leaves no timer behind.

It reads each worker's shared slot (which job is running, since when) to
time jobs from their real start, and marks the soft limit's target job in
the slot *before* signalling the worker.  It never ends a job or kills a
worker itself: it asks its host (the supervisor) through the two public
methods of :class:`LimitHost`, ``kill_job`` and ``finish``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from poolx.engine import memory
from poolx.engine.jobs import Job, JobState
from poolx.engine.timers import Timer, TimerHeap
from poolx.engine.worker import RUNNING, SOFT_TARGET, SOFT_TIMEOUT_SIGNAL, STARTED_NS
from poolx.engine.workers import KillReason
from poolx.exceptions import MemoryLimitExceeded, TimeLimitExceeded

if TYPE_CHECKING:
    from poolx.engine.callbacks import CallbackRunner
    from poolx.engine.config import PoolConfig
    from poolx.engine.workers import WorkerHandle


class LimitHost(Protocol):
    """What the keeper needs from the supervisor."""

    def kill_job(self, handle: WorkerHandle, job: Job, reason: KillReason) -> bool:
        """Kill ``handle``'s worker if it is still running ``job``; whether it did."""
        ...

    def finish(self, job: Job, state: JobState, value: Any) -> None:
        """End ``job`` in ``state`` with ``value`` (its result or exception)."""
        ...


class _WorkerWatch:
    """The keeper's state for one worker: its psutil process and memory poll."""

    __slots__ = ("process", "poll")

    def __init__(self) -> None:
        self.process: Any = None
        self.poll: Timer | None = None


class LimitKeeper:
    """Deadlines and memory sampling for the jobs of one pool."""

    def __init__(self, host: LimitHost, timers: TimerHeap, config: PoolConfig,
                 runner: CallbackRunner) -> None:
        self._host = host
        self._timers = timers
        self._config = config
        self._runner = runner
        self._deadlines: dict[int, Timer] = {}  # job seq -> its next deadline check
        self._watches: dict[int, _WorkerWatch] = {}  # worker pid -> its state here
        self.memory_killed = 0  # jobs failed for going over their memory limit

    # ------------------------------------------------------------------ job events

    def job_sent(self, job: Job, handle: WorkerHandle, now: float) -> None:
        """``job`` (which has limits) was sent to ``handle``'s worker."""
        soft, hard = job.soft_timeout, job.timeout
        if soft is not None or hard is not None:
            first = min(t for t in (soft, hard) if t is not None)
            # A job is sent from the queue, where it has no deadline (see disarm).
            self._deadlines[job.seq] = self._timers.schedule(now + first, self.check_timeout,
                                                             job, handle)
            if self._config.on_timeout_set is not None:
                self._runner.submit(self._config.on_timeout_set, job.sink, job.soft_timeout,
                                    job.timeout)
        if job.memory_limit is not None:
            self._arm_memory_poll(handle)

    def disarm(self, job: Job) -> None:
        """Forget ``job``'s deadline (it ended, or went back to the queue)."""
        timer = self._deadlines.pop(job.seq, None)
        if timer is not None:
            self._timers.cancel(timer)

    def job_ended(self, job: Job, handle: WorkerHandle | None) -> None:
        """``job`` reached a terminal state; ``handle`` is the worker it was on."""
        self.disarm(job)
        if job.memory_limit is not None and handle is not None and not any(
            j.memory_limit is not None and not j.state.terminal for j in handle.jobs.values()
        ):
            watch = self._watches.get(handle.pid)
            if watch is not None:
                self._timers.cancel(watch.poll)
                watch.poll = None

    def worker_gone(self, handle: WorkerHandle) -> None:
        """``handle``'s worker exited: drop everything kept for it."""
        watch = self._watches.pop(handle.pid, None)
        if watch is not None:
            self._timers.cancel(watch.poll)

    @property
    def armed(self) -> int:
        """Jobs with a pending deadline check (for tests and stats)."""
        return len(self._deadlines)

    # ------------------------------------------------------------------ time limits

    def _arm(self, job: Job, handle: WorkerHandle, when: float) -> None:
        # Only from check_timeout, which disarmed the job first.
        self._deadlines[job.seq] = self._timers.schedule(when, self.check_timeout, job, handle)

    def check_timeout(self, job: Job, handle: WorkerHandle) -> None:
        """A deadline check came due for ``job`` on ``handle``'s worker."""
        self.disarm(job)  # its timer fired (or, called directly, must not fire again)
        if job.state.terminal or job.worker is not handle or handle.exited:
            return
        now = time.monotonic()
        slot = handle.slot
        if slot[RUNNING] != job.seq:
            # Not started yet (or finished, result on its way): it cannot expire
            # before now + its shortest limit.
            pending = [t for t in (None if job.soft_fired else job.soft_timeout, job.timeout) if t]
            if pending:
                self._arm(job, handle, now + min(pending))
            return
        started = slot[STARTED_NS] / 1e9
        # The hard limit first: with soft_timeout >= timeout the soft one
        # must never fire (nor delay the kill) instead.
        if job.timeout is not None and now >= started + job.timeout:
            if not self._host.kill_job(handle, job, KillReason.TIMEOUT):
                return  # it finished at this very instant: its result is on the way
            job.sink.job_timed_out(False, job.timeout)
            self._host.finish(job, JobState.TIMED_OUT, TimeLimitExceeded(job.timeout))
            return
        if job.soft_timeout is not None and not job.soft_fired and now >= started + job.soft_timeout:
            job.soft_fired = True
            slot[SOFT_TARGET] = job.seq  # mark the target *before* signalling
            handle.send_signal(SOFT_TIMEOUT_SIGNAL)
            job.sink.job_timed_out(True, job.soft_timeout)
        deadlines = [started + t for t in (None if job.soft_fired else job.soft_timeout, job.timeout) if t]
        if deadlines:
            self._arm(job, handle, min(deadlines))

    # ------------------------------------------------------------------ memory limits

    def _watch(self, handle: WorkerHandle) -> _WorkerWatch:
        watch = self._watches.get(handle.pid)
        if watch is None:
            watch = self._watches[handle.pid] = _WorkerWatch()
        return watch

    def _arm_memory_poll(self, handle: WorkerHandle) -> None:
        watch = self._watch(handle)
        if watch.poll is None:
            watch.poll = self._timers.schedule(
                time.monotonic() + self._config.memory_poll_interval, self.poll_memory, handle
            )

    def poll_memory(self, handle: WorkerHandle) -> None:
        """Sample the memory of ``handle``'s worker while it runs a job with a
        memory limit; kill it and fail the job when it is over."""
        watch = self._watches.get(handle.pid)
        if watch is not None:
            self._timers.cancel(watch.poll)  # it fired (or, called directly, must not fire again)
            watch.poll = None
        if handle.exited or handle.kill_reason is not None:
            return
        job = handle.running_job()
        if job is not None and job.memory_limit is not None and not job.state.terminal:
            used = self._usage_over(handle, job.memory_limit)
            if used is not None and self._host.kill_job(handle, job, KillReason.MEMORY):
                self.memory_killed += 1
                self._host.finish(job, JobState.FAILED,
                                  MemoryLimitExceeded(used, job.memory_limit, handle.pid))
                return
        if any(j.memory_limit is not None and not j.state.terminal for j in handle.jobs.values()):
            self._arm_memory_poll(handle)

    def _process(self, handle: WorkerHandle) -> Any:
        watch = self._watch(handle)
        if watch.process is None:
            watch.process = memory.process(handle.pid)
        return watch.process

    def _usage_over(self, handle: WorkerHandle, limit: int) -> int | None:
        import psutil

        try:
            return memory.usage_over(self._process(handle), limit)
        except psutil.Error:
            return None

    def rss(self, handle: WorkerHandle) -> int | None:
        """The worker's resident set size in bytes, or None if it is gone."""
        import psutil

        if handle.exited:
            return None
        try:
            return self._process(handle).memory_info().rss
        except psutil.Error:
            return None

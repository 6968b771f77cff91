"""Dispatch: which queued job goes to which worker, and how many at once.

Who owns what: the :class:`Dispatcher` belongs to the
:class:`~poolx.engine.supervisor.Supervisor` and runs only on its thread.  It
owns the *job queue* — jobs submitted and not yet sent to any worker, in
order (jobs a dead worker never started come back at its head) — and the
moving average of job durations that sizes the prefetch.  To send, it picks
the workers that may take jobs (idle ones first), moves each job to ``sent``,
records it on the worker's handle, tells the job's sink and the
:class:`~poolx.engine.limits.LimitKeeper`, and writes one JOBS message per
worker through the :class:`~poolx.engine.workers.WorkerSet`.

Prefetch: tiny jobs are sent several at a time to a worker (fewer wake-ups
on both sides); jobs slower than :data:`PREFETCH_WINDOW` are sent one at a
time, so that a worker never sits on work another idle worker could start.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING

from poolx.checks import MovingAverage, prefetch_depth
from poolx.engine import wire
from poolx.engine.jobs import Job, JobState

if TYPE_CHECKING:
    from poolx.engine.limits import LimitKeeper
    from poolx.engine.workers import WorkerSet

PREFETCH_WINDOW = 0.002  # seconds of predicted work a worker may hold
PREFETCH_MAX = 63  # jobs a worker may hold beyond the one it runs


class Dispatcher:
    """The job queue of one pool, and the policy that empties it."""

    def __init__(self, workers: WorkerSet, limits: LimitKeeper, maxtasksperchild: int | None) -> None:
        self.queue: deque[Job] = deque()
        self._workers = workers
        self._limits = limits
        self._maxtasks = maxtasksperchild
        self.sent_bytes = 0  # the waiting_bytes of the jobs sent (see Supervisor.waiting_bytes)
        self._duration = MovingAverage()  # of job durations (s)

    def observe(self, duration: float) -> None:
        """A worker reported how long a job ran."""
        self._duration.add(duration)

    def prefetch(self) -> int:
        """How many jobs a ready worker may hold right now."""
        return 1 + prefetch_depth(self._duration.value, PREFETCH_WINDOW, PREFETCH_MAX)

    def dispatch(self) -> None:
        """Send queued jobs to the workers that have room for them."""
        queue = self.queue
        if not queue:
            return
        limit = self.prefetch()
        maxtasks = self._maxtasks
        takers = []
        for handle in self._workers:
            if not handle.accepts_jobs:
                continue
            # A booting worker gets one job, which waits in its pipe until its
            # initializer is done (and goes back to the queue if that fails):
            # no extra round trip before a new worker starts working.
            room = (limit if handle.ready else 1) - len(handle.jobs)
            if maxtasks is not None:
                room = min(room, maxtasks - handle.sent)
            if room > 0:
                takers.append((handle, room))
        if not takers:
            return
        takers.sort(key=lambda taker: (len(taker[0].jobs), not taker[0].ready))  # idle first
        share = max(1, -(-len(queue) // len(takers)))
        now = time.monotonic()
        limits = self._limits
        for handle, room in takers:
            count = min(room, share, len(queue))
            if count <= 0:
                break
            batch = []
            pid = handle.pid
            held = handle.jobs
            for _ in range(count):
                job = queue.popleft()
                if job.waiting_bytes:
                    self.sent_bytes += job.waiting_bytes
                    job.waiting_bytes = 0
                job.move(JobState.SENT)
                job.worker = handle
                held[job.seq] = job
                batch.append((job.seq, job.flags, job.payload))
                job.sink.job_sent(pid)
                if job.timed or job.memory_limit is not None:
                    limits.job_sent(job, handle, now)
            handle.sent += len(batch)
            self._workers.send(handle, wire.encode_jobs(batch))  # type: ignore[arg-type]
            if maxtasks is not None and handle.sent >= maxtasks:
                self._workers.retire(handle)

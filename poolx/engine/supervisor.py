"""The supervisor: one thread that owns every piece of pool state.

Data flow::

    caller threads              supervisor thread                      workers
    --------------              -----------------                      -------
    Pool.apply_async ──submit──▶ incoming deque ─┐
    Pool.close/grow/…──post────▶ command deque  ─┤ wake-up pipe
                                                 ▼
                                 selector.select(next timer) over:
                                   wake-up fd, every worker's pipe,
                                   every worker's sentinel
                                 ├─ dispatch: pick a ready worker,   ──JOBS──▶ run, reply
                                 │  write the job on *its* pipe
                                 ├─ read results, complete results   ◀─RESULT─
                                 ├─ sentinel fired: fail exactly the job the
                                 │  worker was running (its slot says which),
                                 │  re-queue the rest, start a replacement
                                 └─ timer heap: soft/hard deadlines, memory polls

Who owns what: the :class:`Supervisor` is the loop, the inbox (submitted
jobs and commands from other threads), the commands themselves, shutdown and
the stats snapshot.  It delegates, on its own thread, to parts with one job
each: :class:`~poolx.engine.workers.WorkerSet` (processes, pipes, births and
deaths), :class:`~poolx.engine.dispatch.Dispatcher` (the job queue and
prefetch), :class:`~poolx.engine.late.LatePickler` (the calls pickled
late, on a thread of its own: the supervisor never runs pickling code),
:class:`~poolx.engine.limits.LimitKeeper` (time and memory limits),
:class:`~poolx.engine.health.Health` (when deaths break the pool) and
:class:`~poolx.engine.timers.TimerHeap`.  Every job ends through
:meth:`Supervisor.finish`, which tells the job's sink
(:class:`~poolx.engine.results.JobSink`) and counts it, by function, in the
:class:`~poolx.tally.TaskTally` that ``stats()["tasks"]`` shows.

Nothing else mutates this state: the public :class:`~poolx.Pool` methods
only append to the two deques (:meth:`Supervisor.submit`,
:meth:`Supervisor.post`, :meth:`Supervisor.call`) and write one byte to the
wake-up pipe.  The command methods (``close``, ``terminate``, ``grow``,
``shrink``, ``restart``, ``terminate_job``, ``maintain``) run on the
supervisor thread; other threads hand them over with ``post`` or ``call``.
Because the supervisor chose which worker got which job, a dead worker can
never leave a caller waiting forever — the reason poolx exists.
"""

from __future__ import annotations

import itertools
import os
import pickle
import selectors
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing import util as mp_util
from multiprocessing.pool import MaybeEncodingError
from typing import Any

from poolx import exceptions
from poolx.engine import log, payload, wire
from poolx.engine.callbacks import CallbackRunner
from poolx.engine.config import PoolConfig
from poolx.engine.dispatch import Dispatcher
from poolx.engine.health import Health, describe_exit
from poolx.engine.jobs import Job, JobState
from poolx.engine.late import LatePickler
from poolx.engine.limits import LimitKeeper
from poolx.engine.timers import TimerHeap
from poolx.engine.worker import RUNNING
from poolx.engine.workers import KillReason, WorkerHandle, WorkerSet
from poolx.exceptions import (
    PoolNotRunning,
    PoolTerminated,
    Terminated,
)
from poolx.tally import TaskTally, failure_outcome, raised_outcome

__all__ = ["Supervisor"]

TERMINATE_GRACE = 0.5  # seconds between SIGTERM and SIGKILL in terminate()
EAGER_BYTES = 8 << 20
"""Pickled arguments waiting to be sent (bytes) beyond which ``apply_async``
keeps a job's call unpickled, for the pool's pickler thread to pickle
shortly before it is sent (see :attr:`Supervisor.waiting_bytes`)."""


class Supervisor:
    """Owns workers, queued jobs and timers; runs on its own thread."""

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.pid = os.getpid()  # the process that owns this pool (see in_owner)
        self.runner = CallbackRunner("poolx-callbacks")
        self._seq = itertools.count(1)
        # The inbox: the only state other threads touch (under self.lock).
        self.lock = threading.Lock()
        self._incoming: deque[Job] = deque()
        self._commands: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_pending = False
        self.accepting = True
        self.feeders = 0  # imap feeders still reading their input
        # Pickled arguments submitted (under self.lock) and ended before they
        # were sent (supervisor thread): see waiting_bytes.
        self._bytes_in = 0
        self._bytes_ended = 0
        self._stopped = False
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)

        # Everything below is touched only by the supervisor thread.
        self.timers = TimerHeap()
        self.segments = payload.Segments(config.shm_threshold)
        self.workers = WorkerSet(config, self._selector, self.timers, self.runner,
                                 self._on_message, self._on_worker_exit, self.segments.spec)
        self.limits = LimitKeeper(self, self.timers, config, self.runner)
        self.dispatcher = Dispatcher(self.workers, self.limits, config.maxtasksperchild)
        self.eager_bytes = EAGER_BYTES  # (read per pool: tests set a smaller window)
        self.late = LatePickler(self.segments.job_payload, lambda: self.waiting_bytes, self.eager_bytes,
                                self._late_pickled, self.segments.release)
        self.health = Health(config.max_restarts, config.max_restart_freq)
        self.target = config.processes
        self.closing = False
        self.terminating = False
        self.broken: BaseException | None = None
        self._counters = dict.fromkeys(
            ("submitted", "completed", "failed", "timed_out", "lost", "cancelled"), 0
        )
        self.tally = TaskTally()  # per function: the "tasks" of stats()
        # Registered through a guard object that cleanup drops, so that a
        # finished pool never closes (reused) fd numbers in later children.
        self._fork_guard: _ForkGuard | None = _ForkGuard(self)
        mp_util.register_after_fork(self._fork_guard, _ForkGuard.run)
        self.finished = threading.Event()
        self.thread = threading.Thread(target=self._run, name="poolx-supervisor", daemon=True)

    # ------------------------------------------------------------------ the inbox (any thread)

    def next_seq(self) -> int:
        """A new job id."""
        return next(self._seq)

    def in_owner(self) -> bool:
        """False in a forked child's copy of this pool.  The copy is inert: it
        must never take :attr:`lock`, which a thread of the parent may have
        held at the instant of the fork — the child would wait for a thread
        it does not have (a copy garbage-collected in a worker did, once in
        a few hundred forks, while the parent's supervisor was finishing)."""
        return self.pid == os.getpid()

    def submit(self, jobs: list[Job]) -> None:
        """Hand jobs to the supervisor; :class:`PoolNotRunning` once it stopped
        accepting, or in a forked child's copy of the pool."""
        if not self.in_owner():
            raise PoolNotRunning()
        with self.lock:
            if not self.accepting:
                for job in jobs:
                    self.segments.release(job.payload)
                raise PoolNotRunning()
            for job in jobs:
                if job.payload is not None:
                    job.waiting_bytes = size = len(job.payload)
                    self._bytes_in += size
            self._incoming.extend(jobs)
            if threading.current_thread() is not self.thread:
                self._wake()  # (its own thread drains the inbox before it waits again)

    @property
    def waiting_bytes(self) -> int:
        """Pickled arguments submitted and not yet sent to a worker (any
        thread; a snapshot).  Beyond :attr:`eager_bytes`, ``apply_async``
        stops pickling in the caller's thread: a burst of submissions would
        otherwise hold a pickle per job (100k jobs of one 10 KB argument:
        1 GB) where the standard library, which pickles as its pipe drains,
        holds references.  Such a job is pickled by the pool's pickler
        thread (:mod:`poolx.engine.late`) once few pickles are to be sent
        before it: never on the supervisor thread, which must never wait
        for user code."""
        return self._bytes_in - self._bytes_ended - self.dispatcher.sent_bytes

    def _late_pickled(self, size: int) -> None:
        """(Pickler thread.)  A late pickle of ``size`` bytes is made: count
        it as waiting (the supervisor takes it with LatePickler.collect)."""
        with self.lock:
            self._bytes_in += size
            if not self._stopped:
                self._wake()

    def _drop_late_pickle(self, data: bytes | None) -> None:
        """A late pickle whose job ended while it was made: it is never sent."""
        if data is None:
            return
        self._bytes_ended += len(data)
        if self.segments.release(data):
            self.timers.schedule(time.monotonic() + payload.FREE_SECONDS, self.segments.trim)

    def _fail_late_pickle(self, job: Job, error: BaseException) -> None:
        """A late pickle raised: the job fails with that exception, as the
        standard library fails a job it cannot send."""
        self.finish(job, JobState.FAILED, error)

    def post(self, command: Callable[..., Any], *args: Any) -> bool:
        """Run ``command(*args)`` on the supervisor thread soon; False if the
        supervisor has already finished, or in a forked child's copy of the
        pool (the command is then dropped)."""
        if not self.in_owner():
            return False
        with self.lock:
            if self._stopped:
                return False
            self._commands.append((command, args))
            self._wake()
            return True

    def on_own_thread(self) -> bool:
        """True on the supervisor's thread or its callback thread: code there
        must never wait for the supervisor to finish (it would wait for itself)."""
        return threading.current_thread() is self.thread or self.runner.is_current_thread()

    def call(self, func: Callable[[Supervisor], Any]) -> Any:
        """Run ``func(self)`` on the supervisor thread; return its value or
        raise its exception.  Once the supervisor finished, it runs here."""
        if threading.current_thread() is self.thread or self.finished.is_set():
            return func(self)
        request = _Call(func)
        if not self.post(request, self):
            return func(self)
        return request.result()

    def stop_accepting(self) -> None:
        if not self.in_owner():
            return
        with self.lock:
            self.accepting = False

    def feeder_started(self) -> None:
        """An imap feeder will go on submitting (even after close())."""
        with self.lock:
            self.feeders += 1

    def feeder_finished(self) -> None:
        with self.lock:
            self.feeders -= 1
            if not self._stopped:
                self._wake()  # a closing pool may now be done

    def _wake(self) -> None:  # with self.lock held
        if not self._wake_pending:
            self._wake_pending = True
            try:
                os.write(self._wake_w, b"\0")
            except (BlockingIOError, OSError):
                pass

    # ------------------------------------------------------------------ the loop

    def start(self) -> None:
        # The first workers are started from the caller's thread, as the
        # standard library does: the pool is fully populated on return.
        self.maintain()
        self.thread.start()

    def _run(self) -> None:
        try:
            self.maintain()
            timers = self.timers
            select = self._selector.select
            while True:
                delay = 0 if self._incoming or self._commands else timers.next_delay()
                for key, events in select(delay):
                    key.data(events)
                timers.run_due()
                self._drain()
                if not self.terminating and self.broken is None:
                    self.dispatcher.dispatch()
                    # After the sent bytes were counted: see LatePickler._run.
                    if self.late.wants_room and self.late.has_room():
                        self.late.wake()
                self.maintain()
                if self._done():
                    break
        except BaseException as exc:  # a bug in poolx must not hang the callers
            log.logger().exception("poolx: supervisor crashed; failing all jobs")
            self._crash(exc)
        finally:
            self._cleanup()

    def _done(self) -> bool:
        if self.terminating:
            return not self.workers
        queue = self.dispatcher.queue
        lane = self.late.lane
        if self.closing and self.target == 0 and not self.workers and (queue or lane):
            error = exceptions.BrokenPoolError("the pool was closed with 0 processes: nothing can run this job")
            for job in self._take_queued():
                self.finish(job, JobState.FAILED, error)
        if self.closing and not queue and not lane and not self._incoming and not self.feeders:
            if not any(h.jobs for h in self.workers):
                for handle in list(self.workers):
                    self.workers.retire(handle)
            return not self.workers
        return False

    def _on_wake(self, events: int) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _drain(self) -> None:
        self._wake_pending = False
        incoming = self._incoming
        queue = self.dispatcher.queue
        late = self.late
        lane = late.lane
        while incoming:
            job = incoming.popleft()
            self._counters["submitted"] += 1
            if self.broken is not None:
                self.finish(job, JobState.FAILED, self._broken_error())
            elif self.terminating:
                self.finish(job, JobState.CANCELLED, PoolTerminated(False))
            elif job.call is None and not lane:
                queue.append(job)
            else:  # its call waits to be pickled, or an earlier job's does
                late.admit(job)
        late.hand_over()
        if late.has_made:
            late.collect(queue, self._fail_late_pickle, self._drop_late_pickle)
        commands = self._commands
        while commands:
            command, args = commands.popleft()
            command(*args)

    # ------------------------------------------------------------------ jobs

    def finish(self, job: Job, state: JobState, value: Any, seconds: float | None = None) -> None:
        """End ``job`` in the terminal ``state``; ``value`` is its result
        (``DONE``) or the exception its caller gets; ``seconds`` its run
        time when its worker returned it (a result or an exception)."""
        handle = job.worker
        if job.waiting_bytes:  # it ends before it was sent
            self._bytes_ended += job.waiting_bytes
            job.waiting_bytes = 0
        if self.segments.release(job.payload):  # kept for the next big argument a while
            self.timers.schedule(time.monotonic() + payload.FREE_SECONDS, self.segments.trim)
        queued = job.state is JobState.QUEUED  # never sent: it never started
        job.move(state)
        counters = self._counters
        tally = self.tally
        if state is JobState.DONE:
            counters["completed"] += 1
            tally.ended(job.name, None, seconds, job.counted)
            outcome = None
        elif state is JobState.TIMED_OUT:
            counters["timed_out"] += 1
            outcome = "timeout"
        elif state is JobState.CANCELLED:
            counters["cancelled"] += 1
            outcome = failure_outcome(value)  # None: it never started
        else:
            counters["failed"] += 1
            if queued:  # (its late pickle failed, or the pool broke)
                outcome = None
            else:
                outcome = raised_outcome(value) if seconds is not None else failure_outcome(value)
        if outcome is not None:
            tally.ended(job.name, outcome, seconds, job.counted)
        if job.timed or job.memory_limit is not None:
            self.limits.job_ended(job, handle)
        job.sink.job_done(job.index, state is JobState.DONE, value, seconds)

    def kill_job(self, handle: WorkerHandle, job: Job, reason: KillReason,
                 sig: int = signal.SIGKILL) -> bool:
        """Kill ``handle``'s worker because of ``job``, if that job is still
        the one running; False if it has finished (its result is on the way).
        See :meth:`~poolx.engine.workers.WorkerHandle.kill_if_running`."""
        return handle.kill_if_running(job, reason, sig)

    def _requeue(self, jobs: list[Job]) -> None:
        """Put jobs a dead worker never started back at the head of the queue
        (in order) — or end them, if the pool can no longer run them."""
        for job in jobs:
            job.move(JobState.QUEUED)
            job.worker = None
            self.limits.disarm(job)
        if self.broken is not None:
            for job in jobs:
                self.finish(job, JobState.FAILED, self._broken_error())
        elif self.terminating:
            for job in jobs:
                self.finish(job, JobState.CANCELLED, PoolTerminated(False))
        else:
            self.dispatcher.queue.extendleft(reversed(jobs))

    def _break(self, error: BaseException) -> None:
        """The pool cannot run jobs any more: fail what is queued with ``error``."""
        if self.broken is not None:
            return
        self.broken = error
        log.logger().error("poolx: %s", error)
        for job in self._take_queued():
            self.finish(job, JobState.FAILED, self._broken_error())

    def _take_queued(self) -> list[Job]:
        """Empty the job queue and the late pickler's lane: the jobs not sent
        to a worker, in submission order (those of the lane come after)."""
        queue = self.dispatcher.queue
        jobs = list(queue)
        queue.clear()
        jobs.extend(self.late.take_all())
        return jobs

    def _broken_error(self) -> BaseException:
        """A fresh copy of the error the pool is broken with (one per job)."""
        broken = self.broken
        assert broken is not None
        error = type(broken)(*broken.args)
        error.__cause__ = broken.__cause__
        return error

    # ------------------------------------------------------------------ worker events

    def _on_message(self, handle: WorkerHandle, body: bytes) -> None:
        kind = body[0]
        if kind == wire.RESULT:
            self._on_result(handle, body)
        elif kind == wire.READY:
            handle.ready = True
            self.health.worker_ready()
        elif kind == wire.ACCEPTED:
            seq, when = wire.decode_accepted(body)
            job = handle.jobs.get(seq)
            if job is not None and job.state is JobState.SENT:
                job.move(JobState.ACCEPTED)
                if job.payload is None or payload.segment_name(job.payload) is None:
                    # A job that started never runs again: its arguments can
                    # go — but not a segment's name, which finish() releases.
                    job.payload = None
                job.sink.job_accepted(handle.pid, when)
        elif kind == wire.INIT_FAILED:
            self.health.init_failed(handle.pid, _loads_or(body[1:], None))
            handle.retiring = True
        elif kind == wire.RETIRING:
            handle.retiring = True
        else:
            log.logger().error("poolx: unknown message kind %r from worker %d", kind, handle.pid)

    def _on_result(self, handle: WorkerHandle, body: bytes) -> None:
        seq, ok, duration, data = wire.decode_result(body)
        job = handle.jobs.pop(seq, None)
        handle.done += 1
        self.dispatcher.observe(duration)
        if job is None or job.state.terminal:
            self.segments.discard(data)
            return  # already failed (timed out, memory) before its result arrived
        try:
            value, kept = self.segments.loads(data)
            if kept:  # for the worker's next result, a while
                self.timers.schedule(time.monotonic() + payload.FREE_SECONDS, self.segments.trim)
        except BaseException as exc:  # SystemExit from a __reduce__ too: never the supervisor's end
            ok, value = False, MaybeEncodingError(exc, "<result could not be unpickled in the parent>")
        if job.timed and self.config.on_timeout_cancel is not None:
            self.runner.submit(self.config.on_timeout_cancel, job.sink)
        self.finish(job, JobState.DONE if ok else JobState.FAILED, value, duration)

    def _on_worker_exit(self, handle: WorkerHandle, exitcode: int | None) -> None:
        """A worker is gone and its pipe was read to the end: settle what it held."""
        running = handle.slot[RUNNING]
        self.limits.worker_gone(handle)
        self.segments.worker_gone(handle.pid)
        requeue = []
        # The slot is final now and every result the worker wrote has been
        # read: the job in slot[RUNNING] started and did not finish; the
        # others never started.  (A kill aimed at one job never lets the next
        # one start: see kill_job.)
        for job in handle.jobs.values():
            if job.state.terminal:
                continue
            if job.seq == running or job.payload is None or job.state is JobState.ACCEPTED:  # it started
                if self.terminating or handle.kill_reason is KillReason.POOL_TERMINATE:
                    self.finish(job, JobState.CANCELLED, PoolTerminated(True))
                else:
                    self._counters["lost"] += 1
                    self.finish(job, JobState.LOST, exceptions.WorkerLostError(
                        f"Worker exited prematurely: {describe_exit(exitcode)} Job: {job.seq}."))
            else:
                requeue.append(job)
        handle.jobs.clear()
        if requeue:
            self._requeue(requeue)
        error = self.health.worker_exited(
            handle.pid, exitcode, ready=handle.ready,
            expected=handle.kill_reason is not None or handle.kill_acknowledged,
            others_ready=self.workers.any_ready(),
        )
        if error is not None:
            self._break(error)

    # ------------------------------------------------------------------ commands (supervisor thread)

    def maintain(self) -> None:
        """Start workers until the pool has ``target`` of them."""
        if self.terminating or self.broken is not None:
            return
        if self.closing and not self.dispatcher.queue and not self.late.lane:
            return
        workers = self.workers
        while workers.live() < self.target:
            try:
                if workers.spawn() is None:
                    return  # the OS refused for now; a timer retries
            except exceptions.BrokenPoolError as error:
                self._break(error)
                return

    def close(self) -> None:
        """Accept nothing new; stop once everything submitted is done."""
        self.closing = True

    def terminate(self) -> None:
        """Cancel queued jobs and kill every worker (SIGTERM, then SIGKILL)."""
        if self.terminating:
            return
        self.terminating = True
        for job in self._take_queued():  # (a pickle being made is not waited for)
            self.finish(job, JobState.CANCELLED, PoolTerminated(False))
        # The jobs workers hold end when their worker's exit is seen: only
        # then does the slot tell for certain which one had started.
        self.workers.kill_all(KillReason.POOL_TERMINATE, signal.SIGTERM)
        self.timers.schedule(time.monotonic() + TERMINATE_GRACE, self.workers.kill_all,
                             KillReason.POOL_TERMINATE, signal.SIGKILL)

    def grow(self, n: int) -> None:
        """Add ``n`` workers."""
        self.target += n

    def shrink(self, n: int) -> None:
        """Remove ``n`` workers: idle ones first, busy ones after their current job."""
        self.target -= n
        surplus = self.workers.live() - self.target
        candidates = sorted(
            (h for h in self.workers if not h.retiring and not h.exited),
            key=lambda h: (bool(h.jobs), -h.started_at),
        )
        for handle in candidates[: max(0, surplus)]:
            self.workers.retire(handle, after_current=True)

    def restart(self) -> None:
        """Replace every worker once its current job is done."""
        for handle in list(self.workers):
            self.workers.retire(handle, after_current=True)

    def terminate_job(self, pid: int, sig: int, seq: int | None) -> None:
        """Kill worker ``pid`` with ``sig`` if it is running a job (job
        ``seq``, when given); that job fails with ``Terminated(sig)``."""
        handle = self.workers.get(pid)
        if handle is None or handle.exited:
            return
        job = handle.running_job()
        if job is None or job.state.terminal or (seq is not None and job.seq != seq):
            return  # (terminal: terminated already, and its handler ignored the signal)
        if not self.kill_job(handle, job, KillReason.TERMINATE_JOB, sig):
            return
        error = Terminated(sig)
        error.started = True
        if sig != signal.SIGKILL:
            # Its worker may run on, still reading the argument segment:
            # never write the next argument into it.
            self.segments.release(job.payload, reuse=False)
            job.payload = None
        self.finish(job, JobState.CANCELLED, error)
        # The worker will start nothing after this job (see kill_job), but a
        # job that handles ``sig`` may run on: what it holds goes elsewhere now.
        others = [j for j in handle.jobs.values() if j is not job and not j.state.terminal]
        for other in others:
            del handle.jobs[other.seq]
        if others:
            self._requeue(others)

    # ------------------------------------------------------------------ shutdown

    def _crash(self, exc: BaseException) -> None:
        self.broken = exceptions.BrokenPoolError(f"internal error in the pool supervisor: {exc!r}")
        self.broken.__cause__ = exc
        jobs = list(self.dispatcher.queue) + list(self.late.lane) + list(self._incoming)
        for handle in self.workers:
            jobs.extend(handle.jobs.values())
            handle.send_signal(signal.SIGKILL)
        for job in jobs:
            if not job.state.terminal:
                try:
                    job.state = JobState.FAILED  # whatever state it was in: no transition check
                    job.sink.job_done(job.index, False, self._broken_error())
                except Exception:
                    pass

    def _cleanup(self) -> None:
        self.workers.kill_and_forget()
        with self.lock:
            self.accepting = False
            self._stopped = True
            self._fork_guard = None
            leftover_jobs = list(self._incoming)
            self._incoming.clear()
            leftover_commands = list(self._commands)
            self._commands.clear()
            self._selector.close()
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
        for job in leftover_jobs:
            if not job.state.terminal:
                job.state = JobState.CANCELLED
                job.sink.job_done(job.index, False, PoolTerminated(False))
        for command, args in leftover_commands:
            if isinstance(command, _Call):  # a caller waits for it
                command(*args)
        self.late.stop()  # never waits for a pickle being made
        self.segments.close()
        self.workers.close()
        self.runner.stop()
        self.finished.set()

    def _close_fds_in_child(self) -> None:
        """After fork in a child process: drop this pool's parent-side fds,
        and make this copy of the pool inert.

        Otherwise a worker (or any forked child) would keep other workers'
        pipes and the lifeline's write end open, and they could not notice
        that the pool's process died.  Each fd is closed through the object
        that owns it (a Connection, the selector), never as a bare number:
        a copy of the pool that the child garbage-collects later must not
        close that number again, nor write to the wake-up pipe — the child
        may have reused the number meanwhile (a ``multiprocessing.Manager``
        server forked while a pool was alive did, and lost its connections).
        """
        self.lock = threading.Lock()  # another thread of the parent may have held it
        self.accepting = False
        self._stopped = True  # post(), submit() and _wake() never write now
        self._wake_pending = True
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1
        try:
            self._selector.close()
        except Exception:
            pass
        self.workers.close_in_child()

    # ------------------------------------------------------------------ introspection

    def snapshot(self) -> dict[str, Any]:
        """Per-worker state and pool totals (see :meth:`poolx.Pool.stats`); on
        the supervisor thread (others use ``call(Supervisor.snapshot)``)."""
        now = time.time()
        workers = []
        for handle in self.workers:
            job = handle.running_job()
            if job is not None and not job.counted and not job.state.terminal:
                job.counted = True
                self.tally.started(job.name)
            workers.append({
                "pid": handle.pid,
                "state": handle.state(),
                "job": job.seq if job is not None else None,
                "tasks_done": handle.done,
                "rss": self.limits.rss(handle),
                "uptime": now - handle.started_at,
            })
        counters = self._counters
        return {
            "processes": self.target,
            "queued": len(self.dispatcher.queue) + len(self.late.lane) + len(self._incoming),
            "workers": workers,
            "submitted": counters["submitted"],
            "completed": counters["completed"],
            "failed": counters["failed"],
            "timed_out": counters["timed_out"],
            "lost": counters["lost"],
            "memory_killed": self.limits.memory_killed,
            "cancelled": counters["cancelled"],
            "restarts": self.health.restarts,
            "workers_started": self.workers.started,
            "broken": repr(self.broken) if self.broken is not None else None,
            "tasks": self.tally.snapshot(),
        }


class _Call:
    """A function a caller waits on, to run on the supervisor thread."""

    __slots__ = ("func", "done", "outcome")

    def __init__(self, func: Callable[[Supervisor], Any]) -> None:
        self.func = func
        self.done = threading.Event()
        self.outcome: tuple[bool, Any] = (False, None)

    def __call__(self, supervisor: Supervisor) -> None:
        try:
            self.outcome = (True, self.func(supervisor))
        except BaseException as exc:  # handed back to the caller
            self.outcome = (False, exc)
        finally:
            self.done.set()

    def result(self) -> Any:
        self.done.wait()
        ok, value = self.outcome
        if ok:
            return value
        raise value


class _ForkGuard:
    """Runs :meth:`Supervisor._close_fds_in_child` in forked children while
    its supervisor is alive (multiprocessing keeps only a weak reference)."""

    __slots__ = ("supervisor", "__weakref__")

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def run(self) -> None:
        self.supervisor._close_fds_in_child()


def _loads_or(data: bytes, default: Any) -> Any:
    try:
        return pickle.loads(data)
    except Exception:
        return default

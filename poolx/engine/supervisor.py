"""The supervisor: one thread that owns every piece of pool state.

Data flow::

    caller threads              supervisor thread                      workers
    --------------              -----------------                      -------
    Pool.apply_async ──submit──▶ incoming deque ─┐
    Pool.close/grow/…──command─▶ command deque  ─┤ wake-up pipe
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

Time and memory limits are kept by its :class:`~poolx.engine.limits.LimitKeeper`,
on the same thread.  Nothing else mutates this state: the public :class:`~poolx.Pool` methods only
append to the two deques and write one byte to the wake-up pipe.  Because the
supervisor chose which worker got which job, a dead worker can never leave a
caller waiting forever — the reason poolx exists.

Writes to workers are non-blocking and buffered (a worker blocked sending a
50 MB result must not deadlock against a parent blocked sending it a job), and
reads reassemble frames incrementally (see :mod:`poolx.engine.wire`).
"""

from __future__ import annotations

import heapq
import itertools
import os
import pickle
import selectors
import signal
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from multiprocessing import util as mp_util
from multiprocessing.pool import MaybeEncodingError
from typing import Any, NamedTuple

from poolx.engine import limits, log, wire
from poolx.engine.callbacks import CallbackRunner
from poolx.engine.jobs import Job, JobState
from poolx.engine.worker import KILL_TARGET, RUNNING, SLOT_SIZE, worker_main
from poolx.exceptions import (
    BrokenPoolError,
    PoolNotRunning,
    PoolTerminated,
    RestartFreqExceeded,
    Terminated,
    WorkerLostError,
)

# Tiny jobs are sent several at a time to a worker (fewer wake-ups on both
# sides); jobs slower than this are sent one at a time so that a worker never
# sits on work another idle worker could start.
PREFETCH_WINDOW = 0.002  # seconds of predicted work a worker may hold
PREFETCH_MAX = 64
# Consecutive initializer failures (with no worker ever starting) after which
# the pool declares itself broken instead of respawning forever.
INIT_FAILURE_LIMIT = 3
TERMINATE_GRACE = 0.5  # seconds between SIGTERM and SIGKILL in terminate()
EOF_RECHECK = 0.02  # pipe closed but sentinel silent: how often to check the pid


class PoolConfig(NamedTuple):
    """Everything the supervisor needs to know, validated by :class:`Pool`."""

    processes: int
    context: Any
    initializer: Any
    initargs: tuple[Any, ...]
    maxtasksperchild: int | None
    max_memory_per_child: int | None  # KiB
    soft_timeout: float | None
    timeout: float | None
    memory_limit: int | None
    memory_poll_interval: float
    max_restarts: int | None
    max_restart_freq: float
    on_process_up: Callable[[Any], Any] | None
    on_process_down: Callable[[Any], Any] | None
    on_process_exit: Callable[[int, int], Any] | None
    on_timeout_set: Callable[[Any, Any, Any], Any] | None
    on_timeout_cancel: Callable[[Any], Any] | None


class WorkerHandle:
    """The supervisor's view of one worker process."""

    __slots__ = (
        "process",
        "pid",
        "conn",
        "reader",
        "writer",
        "sentinel",
        "slot",
        "jobs",
        "sent",
        "done",
        "ready",
        "retiring",
        "write_closed",
        "eof",
        "exited",
        "kill_reason",
        "started_at",
        "psutil",
        "memory_timer",
    )

    def __init__(self, process: Any, conn: Any, slot: Any) -> None:
        self.process = process
        self.pid: int = process.pid
        self.conn = conn
        fd = conn.fileno()
        os.set_blocking(fd, False)
        self.reader = wire.FrameReader(fd)
        self.writer = wire.FrameWriter(fd)
        self.sentinel: int = process.sentinel
        self.slot = slot
        self.jobs: OrderedDict[int, Job] = OrderedDict()  # sent, not finished, in send order
        self.sent = 0
        self.done = 0
        self.ready = False
        self.retiring = False  # no new jobs: it will exit after what it holds
        self.write_closed = False  # the worker stopped reading: send nothing more
        self.eof = False  # everything it wrote has been read
        self.exited = False
        self.kill_reason: str | None = None  # set when the supervisor kills it
        self.started_at = time.time()
        self.psutil: Any = None
        self.memory_timer: list[Any] | None = None

    @property
    def fd(self) -> int:
        return self.reader.fd

    def running_job(self) -> Job | None:
        seq = self.slot[RUNNING]
        return self.jobs.get(seq) if seq else None

    def state(self) -> str:
        if self.exited:
            return "exited"
        if not self.ready:
            return "starting"
        if self.retiring:
            return "retiring"
        return "busy" if self.jobs else "idle"


class Supervisor:
    """Owns workers, queued jobs and timers; runs on its own thread."""

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.ctx = config.context
        self.runner = CallbackRunner("poolx-callbacks")
        self._seq = itertools.count(1)
        self._incoming: deque[Job] = deque()
        self._commands: deque[tuple[Any, ...]] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_pending = False
        self.lock = threading.Lock()
        self.accepting = True
        self.feeders = 0  # imap feeders still reading their input
        self._stopped = False
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        self._lifeline_r, self._lifeline_w = self.ctx.Pipe(duplex=False)
        self._spawning_fd: int | None = None
        # Registered through a guard object that cleanup drops, so that a
        # finished pool never closes (reused) fd numbers in later children.
        self._fork_guard: _ForkGuard | None = _ForkGuard(self)
        mp_util.register_after_fork(self._fork_guard, _ForkGuard.run)

        self.queue: deque[Job] = deque()
        self.workers: dict[int, WorkerHandle] = {}
        self.target = config.processes
        self._timers: list[list[Any]] = []
        self.limits = limits.LimitKeeper(self)
        self._timer_ids = itertools.count()
        self._duration_ewma: float | None = None
        self._worker_names = itertools.count(1)

        self.closing = False
        self.terminating = False
        self.broken: BaseException | None = None
        self._init_failures = 0
        self._last_init_error: BaseException | None = None
        self._restart_times: deque[float] = deque()
        self._kill_deadline: float | None = None
        self.finished = threading.Event()
        self.stats_counters = dict.fromkeys(
            ("submitted", "completed", "failed", "timed_out", "lost", "memory_killed",
             "cancelled", "restarts", "workers_started"),
            0,
        )
        self.thread = threading.Thread(target=self._run, name="poolx-supervisor", daemon=True)

    # ------------------------------------------------------------------ caller side

    def next_seq(self) -> int:
        return next(self._seq)

    def submit(self, jobs: list[Job]) -> None:
        """Hand jobs to the supervisor (any thread); ValueError once it stopped."""
        with self.lock:
            if not self.accepting:
                raise PoolNotRunning()
            self._incoming.extend(jobs)
            self._wake()

    def command(self, *cmd: Any) -> bool:
        """Queue a command; False if the supervisor has already finished."""
        with self.lock:
            if self._stopped:
                return False
            self._commands.append(cmd)
            self._wake()
            return True

    def stop_accepting(self) -> None:
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

    def call(self, func: Callable[[Supervisor], Any], timeout: float | None = None) -> Any:
        """Run ``func(self)`` on the supervisor thread and return its value."""
        if threading.current_thread() is self.thread or self.finished.is_set():
            return func(self)
        done = threading.Event()
        box: list[Any] = []

        def run(sup: Supervisor) -> None:
            try:
                box.append((True, func(sup)))
            except BaseException as exc:  # handed back to the caller
                box.append((False, exc))
            finally:
                done.set()

        if not self.command("call", run):
            return func(self)
        done.wait()
        ok, value = box[0]
        if ok:
            return value
        raise value

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
        self._maintain()
        self.thread.start()

    def _run(self) -> None:
        try:
            self._maintain()
            while True:
                for key, events in self._selector.select(self._next_timer_delay()):
                    key.data(events)
                self._run_due_timers()
                self._drain()
                self._dispatch()
                self._maintain()
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
        if self.closing and self.target == 0 and not self.workers and self.queue:
            error = BrokenPoolError("the pool was closed with 0 processes: nothing can run this job")
            while self.queue:
                self._finish(self.queue.popleft(), JobState.FAILED, False, error)
        if self.closing and not self.queue and not self._incoming and not self.feeders:
            if not any(h.jobs for h in self.workers.values()):
                for handle in list(self.workers.values()):
                    self._retire(handle)
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
        while incoming:
            job = incoming.popleft()
            self.stats_counters["submitted"] += 1
            if self.broken is not None:
                self._finish(job, JobState.FAILED, False, self._broken_error())
            elif self.terminating:
                self._finish(job, JobState.CANCELLED, False, _pool_terminated(False))
            else:
                self.queue.append(job)
        commands = self._commands
        while commands:
            name, *args = commands.popleft()
            getattr(self, "_cmd_" + name)(*args)

    # ------------------------------------------------------------------ timers

    def schedule(self, when: float, func: Callable[..., Any], *args: Any) -> list[Any]:
        entry = [when, next(self._timer_ids), func, args]
        heapq.heappush(self._timers, entry)
        return entry

    @staticmethod
    def cancel_timer(entry: list[Any] | None) -> None:
        if entry is not None:
            entry[2] = None

    def _next_timer_delay(self) -> float | None:
        timers = self._timers
        while timers and timers[0][2] is None:
            heapq.heappop(timers)
        if self._incoming or self._commands:
            return 0
        if not timers:
            return None
        return max(0.0, timers[0][0] - time.monotonic())

    def _run_due_timers(self) -> None:
        timers = self._timers
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            _, _, func, args = heapq.heappop(timers)
            if func is not None:
                func(*args)

    # ------------------------------------------------------------------ workers

    def _close_fds_in_child(self) -> None:
        """After fork in a child process: drop this pool's parent-side fds.

        Otherwise a worker (or any forked child) would keep other workers'
        pipes and the lifeline's write end open, and they could not notice
        that the pool's process died.
        """
        fds = [self._wake_r, self._wake_w, self._lifeline_w.fileno()]
        fds += [h.fd for h in self.workers.values()]
        if self._spawning_fd is not None:
            fds.append(self._spawning_fd)
        try:
            fds.append(self._selector.fileno())
        except Exception:
            pass
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def _live_workers(self) -> int:
        return sum(1 for h in self.workers.values() if not h.retiring and not h.exited)

    def _maintain(self) -> None:
        if self.terminating or self.broken is not None:
            return
        if self.closing and not self.queue:
            return
        while self._live_workers() < self.target:
            if not self._spawn():
                break

    def _spawn(self) -> bool:
        parent_conn, child_conn = self.ctx.Pipe(duplex=True)
        slot = self.ctx.RawArray("q", SLOT_SIZE)
        process = self.ctx.Process(
            target=worker_main,
            args=(child_conn, self._lifeline_r, slot, self.config.initializer,
                  self.config.initargs, self.config.max_memory_per_child,
                  self.ctx.get_start_method() == "fork"),
            name=f"PoolxWorker-{next(self._worker_names)}",
            daemon=True,
        )
        self._spawning_fd = parent_conn.fileno()
        try:
            process.start()
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            parent_conn.close()
            self._set_broken(BrokenPoolError(f"cannot start a worker: {exc}"), exc)
            return False
        except OSError as exc:
            parent_conn.close()
            log.logger().error("poolx: cannot start a worker process: %s; retrying in 0.1 s", exc)
            self.schedule(time.monotonic() + 0.1, lambda: None)
            return False
        finally:
            self._spawning_fd = None
            child_conn.close()
        handle = WorkerHandle(process, parent_conn, slot)
        self.workers[handle.pid] = handle
        self._selector.register(handle.fd, selectors.EVENT_READ, lambda ev, h=handle: self._on_io(h, ev))
        self._selector.register(handle.sentinel, selectors.EVENT_READ, lambda ev, h=handle: self._on_exit(h))
        self.stats_counters["workers_started"] += 1
        if self.config.on_process_up is not None:
            self.runner.submit(self.config.on_process_up, process)
        return True

    def _retire(self, handle: WorkerHandle, *, after_current: bool = False) -> None:
        """Ask a worker to exit once it has finished what it holds — or, with
        ``after_current``, as soon as its current job is done (the jobs it
        held but had not started are then re-dispatched to other workers)."""
        if handle.exited:
            return
        if handle.retiring and not after_current:
            return
        handle.retiring = True
        self._send(handle, wire.QUIT_MESSAGE if after_current else wire.STOP_MESSAGE)

    def kill_job(self, handle: WorkerHandle, job: Job, reason: str,
                 sig: int = signal.SIGKILL) -> bool:
        """Kill ``handle``'s worker because of ``job``, if that job is still
        the one running; False if it has finished (its result is on the way).

        The target is written to the slot *before* the slot's running job is
        read, and the worker reads it only *after* clearing its running job:
        so either the job is seen running here and the worker will not start
        another one after it, or it is seen finished and nobody is killed.
        """
        slot = handle.slot
        slot[KILL_TARGET] = job.seq
        if slot[RUNNING] != job.seq or handle.exited:
            slot[KILL_TARGET] = 0
            return False
        self._kill(handle, reason, sig)
        return True

    def _kill(self, handle: WorkerHandle, reason: str, sig: int = signal.SIGKILL) -> None:
        handle.kill_reason = handle.kill_reason or reason
        handle.retiring = True
        try:
            os.kill(handle.pid, sig)
        except ProcessLookupError:
            pass

    def _send(self, handle: WorkerHandle, body: bytes) -> None:
        if handle.write_closed or handle.exited:
            return
        handle.writer.push(body)
        self._flush(handle)

    def _flush(self, handle: WorkerHandle) -> None:
        try:
            done = handle.writer.flush()
        except OSError:
            # The worker is gone or going.  Only the write side is closed:
            # results it wrote before exiting are still in the pipe, and they
            # must be read before anything is concluded about its jobs.
            handle.writer.clear()
            handle.write_closed = True
            done = True
        events = selectors.EVENT_READ | (0 if done else selectors.EVENT_WRITE)
        try:
            key = self._selector.get_key(handle.fd)
        except KeyError:
            return
        if key.events != events:
            self._selector.modify(handle.fd, events, key.data)

    def _on_io(self, handle: WorkerHandle, events: int) -> None:
        if events & selectors.EVENT_WRITE:
            self._flush(handle)
        if events & selectors.EVENT_READ:
            frames, eof = handle.reader.read()
            for body in frames:
                self._on_message(handle, body)
            if eof:
                self._on_eof(handle)

    def _on_eof(self, handle: WorkerHandle) -> None:
        """The worker's pipe closed: it is exiting.  The sentinel normally
        follows at once; if something else keeps the sentinel open (a
        grandchild process), the pid is checked until the worker is gone."""
        if handle.eof:
            return
        handle.eof = True
        try:
            self._selector.unregister(handle.fd)
        except (KeyError, ValueError):
            pass
        self.schedule(time.monotonic() + EOF_RECHECK, self._check_exited, handle)

    def _check_exited(self, handle: WorkerHandle) -> None:
        if handle.exited:
            return
        if handle.process.exitcode is not None:
            self._on_exit(handle)
        else:
            self.schedule(time.monotonic() + EOF_RECHECK, self._check_exited, handle)

    def _on_message(self, handle: WorkerHandle, body: bytes) -> None:
        kind = body[0]
        if kind == wire.RESULT:
            self._on_result(handle, body)
        elif kind == wire.READY:
            handle.ready = True
            self._init_failures = 0
        elif kind == wire.ACCEPTED:
            seq, when = wire.decode_accepted(body)
            job = handle.jobs.get(seq)
            if job is not None and job.state is JobState.SENT:
                job.move(JobState.ACCEPTED)
                job.sink._job_accepted(handle.pid, when)
        elif kind == wire.INIT_FAILED:
            self._init_failures += 1
            self._last_init_error = _loads_or(body[1:], None)
            handle.retiring = True
        elif kind == wire.RETIRING:
            handle.retiring = True
        else:
            log.logger().error("poolx: unknown message kind %r from worker %d", kind, handle.pid)

    def _on_result(self, handle: WorkerHandle, body: bytes) -> None:
        seq, ok, duration, payload = wire.decode_result(body)
        job = handle.jobs.pop(seq, None)
        handle.done += 1
        ewma = self._duration_ewma
        self._duration_ewma = duration if ewma is None else ewma * 0.8 + duration * 0.2
        if job is None or job.state.terminal:
            return  # already failed (timed out, memory) before its result arrived
        try:
            value = pickle.loads(payload)
        except Exception as exc:
            ok, value = False, MaybeEncodingError(exc, "<result could not be unpickled in the parent>")
        if job.timed and self.config.on_timeout_cancel is not None:
            self.runner.submit(self.config.on_timeout_cancel, job.sink)
        if ok:
            self._finish(job, JobState.DONE, True, value)
        else:
            self._finish(job, JobState.FAILED, False, value)
        if not handle.jobs and not self.queue:
            self.limits.cancel_memory_poll(handle)

    def _on_exit(self, handle: WorkerHandle) -> None:
        """The worker's sentinel fired: it is gone.  Settle everything it held."""
        if handle.exited:
            return
        if not handle.eof:  # read everything it wrote before dying: those jobs finished
            frames, _ = handle.reader.read(drain=True)
            for body in frames:
                self._on_message(handle, body)
        handle.exited = True
        for fd in (handle.fd, handle.sentinel):
            try:
                self._selector.unregister(fd)
            except (KeyError, ValueError):
                pass
        handle.process.join(1.0)
        exitcode = handle.process.exitcode
        running = handle.slot[RUNNING]
        self.limits.cancel_memory_poll(handle)
        requeue = []
        # The slot is final now and the pipe has been read to its end: the
        # job in slot[RUNNING] started and did not finish; the others never
        # started.  (A kill aimed at one job never lets the next one start:
        # see kill_job.)
        for job in handle.jobs.values():
            if job.state.terminal:
                continue
            if job.seq == running:
                if self.terminating or handle.kill_reason == "terminate":
                    self._finish(job, JobState.CANCELLED, False, _pool_terminated(True))
                else:
                    self.stats_counters["lost"] += 1
                    self._finish(job, JobState.LOST, False, WorkerLostError(_lost_message(exitcode, job)))
            else:
                requeue.append(job)
        handle.jobs.clear()
        self._requeue(requeue)
        del self.workers[handle.pid]
        try:
            handle.conn.close()
        except OSError:
            pass
        graceful = exitcode == 0 or handle.kill_reason is not None
        if not graceful and not handle.ready:
            pass  # an initializer failure; counted when its message arrived
        elif not graceful:
            self._note_restart()
        if self.config.on_process_down is not None:
            self.runner.submit(_call_then_close, self.config.on_process_down, handle.process)
        else:
            _close_process(handle.process)
        if self.config.on_process_exit is not None:
            self.runner.submit(self.config.on_process_exit, handle.pid, exitcode)
        if self._init_failures >= INIT_FAILURE_LIMIT and not any(
            h.ready for h in self.workers.values()
        ):
            cause = self._last_init_error
            self._set_broken(
                BrokenPoolError(
                    f"the worker initializer failed {self._init_failures} times in a row: {cause!r}"
                ),
                cause,
            )

    def _requeue(self, jobs: list[Job]) -> None:
        """Put jobs a dead worker never started back at the head of the queue
        (in order) — or end them, if the pool can no longer run them."""
        for job in jobs:
            job.move(JobState.QUEUED)
            job.worker = None
        if self.broken is not None:
            for job in jobs:
                self._finish(job, JobState.FAILED, False, self._broken_error())
        elif self.terminating:
            for job in jobs:
                self._finish(job, JobState.CANCELLED, False, _pool_terminated(False))
        else:
            self.queue.extendleft(reversed(jobs))

    def _note_restart(self) -> None:
        self.stats_counters["restarts"] += 1
        limit = self.config.max_restarts
        if limit is None:
            return
        now = time.monotonic()
        times = self._restart_times
        times.append(now)
        while times and times[0] < now - self.config.max_restart_freq:
            times.popleft()
        if len(times) > limit:
            self._set_broken(
                RestartFreqExceeded(
                    f"{len(times)} worker restarts in {self.config.max_restart_freq} s "
                    f"(max_restarts={limit})"
                ),
                None,
            )

    def _set_broken(self, error: BaseException, cause: BaseException | None) -> None:
        if self.broken is not None:
            return
        error.__cause__ = cause
        self.broken = error
        log.logger().error("poolx: %s", error)
        while self.queue:
            self._finish(self.queue.popleft(), JobState.FAILED, False, self._broken_error())

    def _broken_error(self) -> BaseException:
        broken = self.broken
        assert broken is not None
        error = type(broken)(*broken.args)
        error.__cause__ = broken.__cause__
        return error

    # ------------------------------------------------------------------ dispatch

    def _prefetch(self) -> int:
        ewma = self._duration_ewma
        if ewma is None or ewma >= PREFETCH_WINDOW:
            return 1
        return min(PREFETCH_MAX, 1 + int(PREFETCH_WINDOW / max(ewma, 1e-6)))

    def _dispatch(self) -> None:
        queue = self.queue
        if not queue or self.terminating or self.broken is not None:
            return
        limit = self._prefetch()
        maxtasks = self.config.maxtasksperchild
        takers = []
        for handle in self.workers.values():
            if handle.retiring or handle.write_closed or handle.eof or handle.exited:
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
        for handle, room in takers:
            count = min(room, share, len(queue))
            if count <= 0:
                break
            batch = []
            for _ in range(count):
                job = queue.popleft()
                job.move(JobState.SENT)
                job.worker = handle
                handle.jobs[job.seq] = job
                batch.append((job.seq, job.flags, job.payload))
                job.sink._job_sent(handle.pid)
                if job.timed:
                    self.limits.arm_timeouts(job, handle, now)
                if job.memory_limit is not None:
                    self.limits.arm_memory_poll(handle)
            handle.sent += len(batch)
            self._send(handle, wire.encode_jobs(batch))  # type: ignore[arg-type]
            if maxtasks is not None and handle.sent >= maxtasks:
                self._retire(handle)

    def _finish(self, job: Job, state: JobState, ok: bool, value: Any) -> None:
        job.move(state)
        counters = self.stats_counters
        if state is JobState.DONE:
            counters["completed"] += 1
        elif state is JobState.TIMED_OUT:
            counters["timed_out"] += 1
        elif state is JobState.CANCELLED:
            counters["cancelled"] += 1
        else:
            counters["failed"] += 1
        job.sink._job_done(job.index, ok, value)

    # ------------------------------------------------------------------ commands

    def _cmd_call(self, func: Callable[[Supervisor], None]) -> None:
        func(self)

    def _cmd_close(self) -> None:
        self.closing = True

    def _cmd_terminate(self) -> None:
        if self.terminating:
            return
        self.terminating = True
        while self.queue:
            self._finish(self.queue.popleft(), JobState.CANCELLED, False, _pool_terminated(False))
        # The jobs workers hold end when their worker's exit is seen: only
        # then does the slot tell for certain which one had started.
        for handle in list(self.workers.values()):
            self._kill(handle, "terminate", signal.SIGTERM)
        self.schedule(time.monotonic() + TERMINATE_GRACE, self._kill_stragglers)

    def _kill_stragglers(self) -> None:
        for handle in list(self.workers.values()):
            self._kill(handle, "terminate", signal.SIGKILL)

    def _cmd_grow(self, n: int) -> None:
        self.target += n

    def _cmd_shrink(self, n: int) -> None:
        self.target -= n
        surplus = self._live_workers() - self.target
        # idle workers leave first, busy ones after their current job
        candidates = sorted(
            (h for h in self.workers.values() if not h.retiring and not h.exited),
            key=lambda h: (bool(h.jobs), -h.started_at),
        )
        for handle in candidates[: max(0, surplus)]:
            self._retire(handle, after_current=True)

    def _cmd_restart(self) -> None:
        for handle in list(self.workers.values()):
            self._retire(handle, after_current=True)

    def _cmd_terminate_job(self, pid: int, sig: int, seq: int | None) -> None:
        handle = self.workers.get(pid)
        if handle is None or handle.exited:
            return
        job = handle.running_job()
        if job is None or (seq is not None and job.seq != seq):
            return
        if not self.kill_job(handle, job, "terminate_job", sig):
            return
        error = Terminated(sig)
        error.started = True
        self._finish(job, JobState.CANCELLED, False, error)

    # ------------------------------------------------------------------ shutdown

    def _crash(self, exc: BaseException) -> None:
        self.broken = BrokenPoolError(f"internal error in the pool supervisor: {exc!r}")
        self.broken.__cause__ = exc
        jobs = list(self.queue) + list(self._incoming)
        for handle in self.workers.values():
            jobs.extend(handle.jobs.values())
            try:
                os.kill(handle.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for job in jobs:
            if not job.state.terminal:
                try:
                    job.state = JobState.FAILED
                    job.sink._job_done(job.index, False, self._broken_error())
                except Exception:
                    pass

    def _cleanup(self) -> None:
        for handle in list(self.workers.values()):
            try:
                os.kill(handle.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            handle.process.join(1.0)
        self.workers.clear()
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
                job.sink._job_done(job.index, False, _pool_terminated(False))
        for name, *args in leftover_commands:
            if name == "call":
                args[0](self)
        self._lifeline_w.close()
        self._lifeline_r.close()
        self.runner.stop()
        self.finished.set()

    # ------------------------------------------------------------------ introspection

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        workers = []
        for handle in self.workers.values():
            job = handle.running_job()
            workers.append({
                "pid": handle.pid,
                "state": handle.state(),
                "job": job.seq if job is not None else None,
                "tasks_done": handle.done,
                "rss": limits.rss(handle),
                "uptime": now - handle.started_at,
            })
        return {
            "processes": self.target,
            "queued": len(self.queue) + len(self._incoming),
            "workers": workers,
            **self.stats_counters,
            "broken": repr(self.broken) if self.broken is not None else None,
        }


class _ForkGuard:
    """Runs :meth:`Supervisor._close_fds_in_child` in forked children while
    its supervisor is alive (multiprocessing keeps only a weak reference)."""

    __slots__ = ("supervisor", "__weakref__")

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def run(self) -> None:
        self.supervisor._close_fds_in_child()


def _pool_terminated(started: bool) -> PoolTerminated:
    return PoolTerminated(started)


def _close_process(process: Any) -> None:
    try:
        process.close()
    except ValueError:
        pass


def _call_then_close(callback: Callable[[Any], Any], process: Any) -> None:
    try:
        callback(process)
    finally:
        _close_process(process)


def _loads_or(data: bytes, default: Any) -> Any:
    try:
        return pickle.loads(data)
    except Exception:
        return default


def _lost_message(exitcode: int | None, job: Job) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        how = f"signal {-exitcode} ({name})"
    else:
        how = f"exitcode {exitcode}"
    return f"Worker exited prematurely: {how} Job: {job.seq}."

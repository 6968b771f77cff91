"""Worker processes as the supervisor sees them: start, talk, retire, kill, reap.

Who owns what: the :class:`WorkerSet` belongs to the
:class:`~poolx.engine.supervisor.Supervisor` and runs only on its thread.  It
owns every :class:`WorkerHandle` (one per live worker process), the parent
end of each worker's duplex pipe and the pool's lifeline, and registers each
worker's pipe and death signal (a pidfd, else its sentinel) on the
supervisor's selector.  It knows nothing
about what jobs *mean*: every complete frame a worker writes goes to the
supervisor's ``on_message(handle, body)``, and once a worker is gone (its
sentinel fired, or its pipe closed and its pid is gone) and its pipe has been
read to the end, the supervisor's ``on_exit(handle, exitcode)`` settles the
jobs it held.  Process lifecycle callbacks (``on_process_up``/``_down``/
``_exit``) are handed to the callback thread from here.

A handle also carries the parent's side of the worker's shared *slot* (see
:mod:`poolx.engine.worker`): which job is running, and the kill target, which
:meth:`WorkerHandle.kill_if_running` writes *before* reading the running job.

Writes are non-blocking and buffered (a worker blocked sending a 50 MB result
must not deadlock against a parent blocked sending it a job); reads
reassemble frames incrementally (see :mod:`poolx.engine.wire`).
"""

from __future__ import annotations

import enum
import itertools
import os
import pickle
import selectors
import signal
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from poolx import exceptions
from poolx.engine import log, wire
from poolx.engine.callbacks import CallbackRunner
from poolx.engine.config import PoolConfig
from poolx.engine.jobs import Job
from poolx.engine.timers import TimerHeap
from poolx.engine.worker import KILL_ACK, KILL_TARGET, QUIT_NOW, RUNNING, SLOT_SIZE, worker_main

EOF_RECHECK = 0.02  # pipe closed but sentinel silent: how often to check the pid
SPAWN_RETRY = 0.1  # seconds before retrying a spawn that failed with OSError


class KillReason(enum.Enum):
    """Why the supervisor killed a worker (its exit is then not a crash)."""

    TIMEOUT = "timeout"  # its job ran past the hard time limit
    MEMORY = "memory"  # its job went over its memory limit
    TERMINATE_JOB = "terminate_job"  # Pool.terminate_job / ApplyResult.terminate
    POOL_TERMINATE = "terminate"  # Pool.terminate: the whole pool is stopping


class WorkerHandle:
    """The supervisor's view of one worker process."""

    __slots__ = (
        "process",
        "pid",
        "conn",
        "reader",
        "writer",
        "sentinel",
        "death_fd",
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
    )

    def __init__(self, process: Any, conn: Any, slot: Any, death_fd: int | None = None) -> None:
        self.process = process
        self.pid: int = process.pid
        self.conn = conn
        fd = conn.fileno()
        os.set_blocking(fd, False)
        self.reader = wire.FrameReader(fd)
        self.writer = wire.FrameWriter(fd)
        self.sentinel: int = process.sentinel
        # What the supervisor waits on for the worker's death: a pidfd (which
        # a grandchild the job forked cannot hold open the way it holds the
        # sentinel pipe), else the sentinel.
        self.death_fd: int = self.sentinel if death_fd is None else death_fd
        self.slot = slot
        self.jobs: OrderedDict[int, Job] = OrderedDict()  # sent, not finished, in send order
        self.sent = 0
        self.done = 0
        self.ready = False
        self.retiring = False  # no new jobs: it will exit after what it holds
        self.write_closed = False  # the worker stopped reading: send nothing more
        self.eof = False  # everything it wrote has been read
        self.exited = False
        self.kill_reason: KillReason | None = None  # set when the supervisor kills it
        self.started_at = time.time()

    @property
    def fd(self) -> int:
        return self.reader.fd

    @property
    def accepts_jobs(self) -> bool:
        """Whether new jobs may be sent to it."""
        return not (self.retiring or self.write_closed or self.eof or self.exited)

    def running_job(self) -> Job | None:
        """The job the worker is executing right now (from its slot), if any."""
        seq = self.slot[RUNNING]
        return self.jobs.get(seq) if seq else None

    def state(self) -> str:
        """``starting``, ``idle``, ``busy``, ``retiring`` or ``exited`` (for stats)."""
        if self.exited:
            return "exited"
        if not self.ready:
            return "starting"
        if self.retiring:
            return "retiring"
        return "busy" if self.jobs else "idle"

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the worker (nothing happens if it is already gone;
        callers check the signal number before it reaches the supervisor)."""
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass
        except OSError as exc:
            log.logger().error("poolx: cannot send signal %r to worker %d: %s", sig, self.pid, exc)

    @property
    def kill_acknowledged(self) -> bool:
        """The worker exited because the supervisor was killing it for the
        job it had just finished (see :mod:`poolx.engine.worker`)."""
        return bool(self.slot[KILL_ACK])

    def kill(self, reason: KillReason, sig: int = signal.SIGKILL) -> None:
        """Kill the worker; its exit is then expected, not a crash."""
        self.kill_reason = self.kill_reason or reason
        self.retiring = True
        self.send_signal(sig)

    def kill_if_running(self, job: Job, reason: KillReason, sig: int = signal.SIGKILL) -> bool:
        """Kill the worker because of ``job``, if that job is still the one
        running; False if it has finished (its result is on the way).

        The target is written to the slot *before* the slot's running job is
        read, and the worker reads it only *after* clearing its running job:
        so either the job is seen running here and the worker will not start
        another one after it, or it is seen finished and nobody is killed.
        """
        slot = self.slot
        slot[KILL_TARGET] = job.seq
        if slot[RUNNING] != job.seq or self.exited:
            slot[KILL_TARGET] = 0
            return False
        self.kill(reason, sig)
        return True

    def __repr__(self) -> str:
        return f"<WorkerHandle {self.pid} {self.state()} jobs={len(self.jobs)}>"


class WorkerSet:
    """The live workers of one pool, their pipes, and their births and deaths."""

    def __init__(
        self,
        config: PoolConfig,
        selector: selectors.BaseSelector,
        timers: TimerHeap,
        runner: CallbackRunner,
        on_message: Callable[[WorkerHandle, bytes], None],
        on_exit: Callable[[WorkerHandle, int | None], None],
        shm: Any = None,
    ) -> None:
        self.config = config
        self.shm = shm  # the payload.Spec workers write big results with
        self.ctx = config.context
        self._selector = selector
        self._timers = timers
        self._runner = runner
        self._on_message = on_message
        self._on_exit = on_exit
        self._handles: dict[int, WorkerHandle] = {}
        self.processes: tuple[Any, ...] = ()
        """The live workers' process objects; replaced (never mutated) on each
        birth and reaping, so that other threads may read it at any time."""
        self._names = itertools.count(1)
        self._lifeline_r, self._lifeline_w = self.ctx.Pipe(duplex=False)
        self._spawning: Any = None  # the parent end of the pipe of a worker being started
        self.started = 0  # workers started so far

    # ------------------------------------------------------------------ the set

    def __iter__(self) -> Iterator[WorkerHandle]:
        return iter(self._handles.values())

    def __len__(self) -> int:
        return len(self._handles)

    def get(self, pid: int) -> WorkerHandle | None:
        return self._handles.get(pid)

    def live(self) -> int:
        """Workers that count towards the pool's size (not leaving, not gone)."""
        return sum(1 for h in self._handles.values() if not h.retiring and not h.exited)

    def any_ready(self) -> bool:
        return any(h.ready for h in self._handles.values())

    def sentinels(self) -> list[int]:
        return [h.sentinel for h in self._handles.values() if not h.exited]

    # ------------------------------------------------------------------ birth

    def spawn(self) -> WorkerHandle | None:
        """Start one worker.  None if the OS refused for now (a retry is
        scheduled); :class:`BrokenPoolError` if it can never work (the
        initializer or its arguments cannot be sent to a worker)."""
        config = self.config
        ctx = self.ctx
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        slot = ctx.RawArray("q", SLOT_SIZE)
        process = ctx.Process(
            target=worker_main,
            args=(child_conn, self._lifeline_r, slot, config.initializer, config.initargs,
                  config.max_memory_per_child, ctx.get_start_method() == "fork", self.shm),
            name=f"PoolxWorker-{next(self._names)}",
            daemon=True,
        )
        self._spawning = parent_conn
        try:
            process.start()
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            parent_conn.close()
            raise exceptions.BrokenPoolError(f"cannot start a worker: {exc}") from exc
        except OSError as exc:
            parent_conn.close()
            log.logger().error("poolx: cannot start a worker process: %s; retrying in %s s",
                               exc, SPAWN_RETRY)
            self._timers.schedule(time.monotonic() + SPAWN_RETRY, _wake_up)
            return None
        finally:
            self._spawning = None
            child_conn.close()
        # Only a child of ours has a pidfd that cannot name a reused pid;
        # under forkserver the sentinel comes from the server and no
        # grandchild holds it.
        own_child = ctx.get_start_method() in ("fork", "spawn")
        handle = WorkerHandle(process, parent_conn, slot,
                              _open_pidfd(process.pid) if own_child else None)
        self._handles[handle.pid] = handle
        self.processes = (*self.processes, process)
        self._selector.register(handle.fd, selectors.EVENT_READ,
                                lambda events, h=handle: self._on_io(h, events))
        self._selector.register(handle.death_fd, selectors.EVENT_READ,
                                lambda events, h=handle: self._reap(h))
        self.started += 1
        if config.on_process_up is not None:
            self._runner.submit(config.on_process_up, process)
        return handle

    # ------------------------------------------------------------------ talking

    def send(self, handle: WorkerHandle, body: bytes) -> None:
        """Queue one message for the worker and write what the pipe takes now."""
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
            on_message = self._on_message
            for body in frames:
                on_message(handle, body)
            if eof:
                self._on_eof(handle)

    # ------------------------------------------------------------------ leaving

    def retire(self, handle: WorkerHandle, *, after_current: bool = False) -> None:
        """Ask a worker to exit once it has finished what it holds — or, with
        ``after_current``, as soon as its current job is done (the jobs it
        held but had not started are then re-dispatched to other workers)."""
        if handle.exited:
            return
        if handle.retiring and not after_current:
            return
        handle.retiring = True
        if after_current:
            handle.slot[QUIT_NOW] = 1  # before QUIT: no job in the pipe ahead of it starts
        self.send(handle, wire.QUIT_MESSAGE if after_current else wire.STOP_MESSAGE)

    def kill_all(self, reason: KillReason, sig: int) -> None:
        for handle in list(self._handles.values()):
            handle.kill(reason, sig)

    def _on_eof(self, handle: WorkerHandle) -> None:
        """The worker's pipe closed: it is exiting.  The sentinel normally
        follows at once; if something else keeps the sentinel open (a
        grandchild process), the pid is checked until the worker is gone."""
        if handle.eof:
            return
        handle.eof = True
        self._unregister(handle.fd)
        self._timers.schedule(time.monotonic() + EOF_RECHECK, self._check_exited, handle)

    def _check_exited(self, handle: WorkerHandle) -> None:
        if handle.exited:
            return
        if handle.process.exitcode is not None:
            self._reap(handle)
        else:
            self._timers.schedule(time.monotonic() + EOF_RECHECK, self._check_exited, handle)

    def _reap(self, handle: WorkerHandle) -> None:
        """The worker is gone: read what it wrote, then let the supervisor
        settle its jobs, then tell the lifecycle callbacks."""
        if handle.exited:
            return
        if not handle.eof:  # read everything it wrote before dying: those jobs finished
            frames, _ = handle.reader.read(drain=True)
            for body in frames:
                self._on_message(handle, body)
        handle.exited = True
        self._unregister(handle.fd)
        self._unregister(handle.death_fd)
        if handle.death_fd != handle.sentinel:
            os.close(handle.death_fd)
        handle.process.join(1.0)
        exitcode = handle.process.exitcode
        del self._handles[handle.pid]
        self.processes = tuple(p for p in self.processes if p is not handle.process)
        try:
            handle.conn.close()
        except OSError:
            pass
        self._on_exit(handle, exitcode)
        config = self.config
        if config.on_process_down is not None:
            self._runner.submit(_call_then_close, config.on_process_down, handle.process)
        else:
            _close_process(handle.process)
        if config.on_process_exit is not None:
            self._runner.submit(config.on_process_exit, handle.pid, exitcode)

    def _unregister(self, fd: int) -> None:
        try:
            self._selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    # ------------------------------------------------------------------ shutdown

    def kill_and_forget(self) -> None:
        """Last resort at shutdown: SIGKILL every worker still there and wait
        for it; no job is settled (the supervisor has done so already)."""
        for handle in list(self._handles.values()):
            handle.send_signal(signal.SIGKILL)
            handle.process.join(1.0)
        self._handles.clear()
        self.processes = ()

    def close_in_child(self) -> None:
        """In a forked child: close every worker pipe's parent end (and the
        one being created) and the lifeline's write end, each through the
        Connection that owns it, so that nothing in the child closes that fd
        number again later (the child may have reused it by then)."""
        conns = [self._lifeline_w, *(h.conn for h in self._handles.values())]
        if self._spawning is not None:
            conns.append(self._spawning)
        for conn in conns:
            try:
                conn.close()
            except OSError:
                pass
        # The workers' pidfds stay open here: a pidfd holds nothing alive,
        # and closing bare fd numbers is what this method must not do (one
        # the supervisor had just closed may already be reused).

    def close(self) -> None:
        """Close the lifeline: any worker still alive then exits by itself."""
        self._lifeline_w.close()
        self._lifeline_r.close()


def _open_pidfd(pid: int) -> int | None:
    """A pidfd for our child ``pid`` (readable once it exits), or None where
    the OS or Python has none."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        return int(pidfd_open(pid))
    except OSError:  # kernel < 5.3
        return None


def _wake_up() -> None:
    """A timer that only ends the supervisor's wait (the loop then retries)."""


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

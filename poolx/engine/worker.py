"""The worker process: receive jobs on its own pipe, run them, send results.

Who owns what: each worker owns nothing but its pipe end, a small shared
array (the *slot*) and a lifeline.  The supervisor decides everything else.

* ``slot[RUNNING]`` holds the seq of the job the worker is executing (set
  before unpickling its arguments, cleared after its result is written), so
  when a worker dies the supervisor knows which job was in flight; every
  other job it held is re-dispatched.  ``slot[STARTED_NS]`` is when it
  started (``time.monotonic_ns``, shared by all processes on Linux), which
  lets the supervisor time jobs without extra messages.
* ``slot[SOFT_TARGET]`` is written by the supervisor *before* it sends
  ``SIGUSR1``: the handler raises :class:`SoftTimeLimitExceeded` only if that
  seq is the job still running user code, so a late signal never hits the
  next job or an idle worker.
* ``slot[KILL_TARGET]`` is written by the supervisor *before* it reads
  ``slot[RUNNING]`` to decide to kill the worker for one job (a hard time
  limit, a memory limit, ``terminate_job``).  The worker clears
  ``slot[RUNNING]`` after each job and only then reads ``slot[KILL_TARGET]``:
  if it names the job just finished, the worker exits instead of starting
  another one.  So a kill aimed at a job that finished at that very instant
  never lands in the middle of the next job.  Before exiting that way it
  writes the seq to ``slot[KILL_ACK]``: the supervisor then knows the exit
  was its own doing even if it had decided, a moment later, that the job
  was no longer running.
* ``slot[QUIT_NOW]`` is set by the supervisor before it asks a worker to
  leave after its current job (``restart``, ``shrink``): the worker checks it
  before starting each job, so a job already on its way in the pipe is not
  started by a worker that was told to go.

What the supervisor concludes when a worker dies rests on two facts: the
slot is final once the process is gone, and every result the worker wrote is
still in the pipe until the supervisor reads it.  It reads the pipe to the
end first (those jobs finished), then the job in ``slot[RUNNING]`` started
and did not finish (it fails as lost), and every other job it held never
started (it goes to another worker).  No job that finished runs again.
* The lifeline is the read end of a pipe whose write end only the pool's
  process holds.  A watchdog thread blocks on it; if the pool's process dies
  the pipe reports EOF and the worker exits at once, even mid-job.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import sys
import threading
import time
from collections import deque
from itertools import starmap
from multiprocessing.connection import Connection
from multiprocessing.pool import ExceptionWithTraceback, MaybeEncodingError
from typing import Any

from poolx.engine import memory, payload, pickling, wire
from poolx.exceptions import SoftTimeLimitExceeded

RUNNING, STARTED_NS, SOFT_TARGET, KILL_TARGET, KILL_ACK, QUIT_NOW = 0, 1, 2, 3, 4, 5
SLOT_SIZE = 6

SOFT_TIMEOUT_SIGNAL = signal.SIGUSR1
EXIT_INIT_FAILED = 3
EXIT_ORPHANED = 4
EXIT_KILL_PENDING = 5  # the supervisor is killing it for the job it just finished


class _WorkerState:
    """Worker-local state read by the signal handlers (soft time limit, SIGINT)."""

    __slots__ = ("slot", "in_user_code", "shm")

    def __init__(self, slot: Any, shm: payload.Spec | None = None) -> None:
        self.slot = slot
        self.in_user_code = False
        self.shm = shm  # where big results go (see poolx.engine.payload)

    def on_soft_timeout(self, signum: int, frame: Any) -> None:
        slot = self.slot
        running = slot[RUNNING]
        if self.in_user_code and running and slot[SOFT_TARGET] == running:
            slot[SOFT_TARGET] = 0
            raise SoftTimeLimitExceeded()

    def on_sigint(self, signum: int, frame: Any) -> None:
        """SIGINT raises ``KeyboardInterrupt`` in a running job (the standard
        library's behaviour, which some libraries rely on to stop a job);
        an idle worker, or one between jobs, ignores it."""
        if self.in_user_code:
            raise KeyboardInterrupt


def repair_import_locks() -> None:
    """In a forked child, release import locks other parent threads held.

    ``fork`` copies the parent's memory, including the per-module import
    locks of modules that *other* threads were importing at that instant;
    those threads do not exist in the child, so the first import of such a
    module would deadlock the worker forever.  Reset those locks and drop
    the half-initialized modules so that they are imported afresh.
    """
    import _thread
    import importlib._bootstrap as bootstrap

    me = _thread.get_ident()
    locks = getattr(bootstrap, "_module_locks", {})
    for name, ref in list(locks.items()):
        lock = ref()
        if lock is None or getattr(lock, "owner", None) in (None, me):
            continue
        module = sys.modules.get(name)
        spec = getattr(module, "__spec__", None)
        if module is not None and getattr(spec, "_initializing", False):
            del sys.modules[name]
        locks.pop(name, None)


def _watch_lifeline(lifeline: Connection) -> None:
    """Exit the worker as soon as the pool's process is gone."""
    fd = lifeline.fileno()
    while True:
        try:
            readable, _, _ = select.select([fd], [], [])
        except InterruptedError:
            continue
        except OSError:
            break
        if readable:
            break
    os._exit(EXIT_ORPHANED)


def _encode_error(exc: BaseException) -> bytes:
    """Pickle an exception with its traceback text, checking it round-trips."""
    try:
        data = pickle.dumps(ExceptionWithTraceback(exc, exc.__traceback__), pickling.PROTOCOL)
        pickle.loads(data)  # an exception that cannot be rebuilt must not reach the parent
        return data
    except Exception as encoding_error:
        return pickle.dumps(MaybeEncodingError(encoding_error, exc), pickling.PROTOCOL)


def _encode_value(value: Any, shm: payload.Spec | None) -> tuple[int, bytes]:
    try:
        return wire.RESULT_OK, payload.dumps(value, shm)
    except Exception as exc:
        return wire.RESULT_ERROR, pickle.dumps(MaybeEncodingError(exc, value), pickling.PROTOCOL)


_PLAIN = (bytes, bytearray)  # freed without running any Python code
_HOLD_AT_LEAST = 64 * 1024  # bytes: smaller buffers cost nothing to free


def _big_plain(args: Any, kwds: Any, mode: int) -> list[Any]:
    """The big ``bytes``/``bytearray`` arguments of a call (the arguments,
    a map chunk's items, a starmap item's arguments, keyword values)."""
    if mode == wire.APPLY:
        items = [*args, *kwds.values()] if kwds else args
    elif mode == wire.MAP:
        items = args
    else:
        items = [arg for item in args if type(item) in (tuple, list) for arg in item]
    return [item for item in items if type(item) in _PLAIN and len(item) >= _HOLD_AT_LEAST]


def _call(data: memoryview, state: _WorkerState) -> tuple[Any, list[Any]]:
    """Run one job's call; return its value, and its big plain arguments
    (:func:`_big_plain`) if they came through a segment, which the caller
    may free after the result is on its way.  Everything else of the call
    is freed here, inside the job (its time limit covers a ``__del__`` that
    blocks).  A pipe payload is not searched: a map chunk of small items
    would pay for it per item."""
    out_of_band = data[0] == payload.MAGIC
    func, args, kwds, mode = payload.loads(data)
    state.in_user_code = True
    if mode == wire.APPLY:
        value = func(*args, **kwds)
    elif mode == wire.MAP:
        value = list(map(func, args))
    else:
        value = list(starmap(func, args))
    state.in_user_code = False
    return value, _big_plain(args, kwds, mode) if out_of_band else []


def _small_or_out_of_band(value: Any, shm: payload.Spec | None) -> bool:
    """True if pickling ``value`` makes no big pickle: a number or None, a
    small ``bytes``/``bytearray``, or a big one that goes to a segment."""
    kind = type(value)
    if value is None or kind in (bool, int, float):
        return True
    return kind in _PLAIN and (len(value) < _HOLD_AT_LEAST or (shm is not None and len(value) >= shm.threshold))


def _run_job(
    conn: Connection, state: _WorkerState, seq: int, flags: int, data: memoryview
) -> bool:
    """Run one job and send its result; True if the job raised ``SystemExit``
    (the worker then leaves, as billiard's do)."""
    slot = state.slot
    slot[STARTED_NS] = time.monotonic_ns()
    slot[RUNNING] = seq
    if flags & wire.FLAG_ACK:
        conn.send_bytes(wire.encode_accepted(seq, time.monotonic()))
    started = time.perf_counter()
    leave = False
    # Big bytes/bytearray arguments and value, freed once the result is
    # sent (freeing 50 MB takes milliseconds nobody needs to wait for):
    # only plain buffers, whose freeing runs no code of the user's, and
    # only when pickling the value makes no big copy beside them (the
    # job's memory peak stays what it was when its function returned).
    held: Any = None
    try:
        try:
            value, held = _call(data, state)
            if held and not _small_or_out_of_band(value, state.shm):
                held = None
            ok, result = _encode_value(value, state.shm)
            if type(value) in _PLAIN and len(value) >= _HOLD_AT_LEAST and len(result) < _HOLD_AT_LEAST:
                held = (held, value)  # it went to a segment
            del value
        except BaseException as exc:  # BaseExceptions too: the caller gets them (billiard)
            state.in_user_code = False
            leave = isinstance(exc, SystemExit)
            ok, result = wire.RESULT_ERROR, _encode_error(exc)
    except (SoftTimeLimitExceeded, KeyboardInterrupt) as exc:  # a signal landed in the handler above
        state.in_user_code = False
        ok, result = wire.RESULT_ERROR, _encode_error(exc)
    conn.send_bytes(wire.encode_result(seq, ok, time.perf_counter() - started, result))
    slot[RUNNING] = 0
    del held
    return leave


def _over_memory(max_memory_kib: int | None) -> bool:
    if not max_memory_kib:
        return False
    global _SELF
    if _SELF is None:
        _SELF = memory.process()
    return memory.usage_over(_SELF, max_memory_kib * 1024) is not None


_SELF: Any = None


def worker_main(
    conn: Connection,
    lifeline: Connection,
    slot: Any,
    initializer: Any,
    initargs: tuple[Any, ...],
    max_memory_kib: int | None,
    forked: bool = False,
    shm: payload.Spec | None = None,
) -> None:
    """Entry point of every worker process (importable for spawn/forkserver)."""
    if forked:
        repair_import_locks()
    state = _WorkerState(slot, shm)
    signal.signal(signal.SIGINT, state.on_sigint)
    signal.signal(SOFT_TIMEOUT_SIGNAL, state.on_soft_timeout)
    threading.Thread(
        target=_watch_lifeline, args=(lifeline,), name="poolx-lifeline", daemon=True
    ).start()

    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as exc:
            try:
                conn.send_bytes(bytes((wire.INIT_FAILED,)) + _encode_error(exc))
            finally:
                sys.exit(EXIT_INIT_FAILED)
    conn.send_bytes(wire.READY_MESSAGE)

    local: deque[tuple[int, int, memoryview]] = deque()
    stop_when_idle = False
    while True:
        if not local:
            if stop_when_idle:
                return
            try:
                body = conn.recv_bytes()
            except (EOFError, OSError):
                return
            if body[0] != wire.JOBS:
                return  # STOP or QUIT with nothing held
            local.extend(wire.decode_jobs(body))
            del body
        if slot[QUIT_NOW]:
            return  # retired: the jobs it holds go to other workers
        seq, flags, data = local.popleft()
        leave = _run_job(conn, state, seq, flags, data)
        del data
        if slot[KILL_TARGET] == seq:  # read only after slot[RUNNING] was cleared
            slot[KILL_ACK] = seq  # this exit is the supervisor's doing, not a crash
            os._exit(EXIT_KILL_PENDING)
        if leave:  # the job raised SystemExit: a new worker takes this one's place
            conn.send_bytes(bytes((wire.RETIRING,)) + b"SystemExit")
            return
        if _over_memory(max_memory_kib):
            # Jobs it held but did not start go back to the pool's queue.
            conn.send_bytes(bytes((wire.RETIRING,)) + b"max_memory_per_child")
            return
        # Between prefetched jobs, look for news: more jobs, or a request to leave.
        while local and conn.poll(0):
            try:
                body = conn.recv_bytes()
            except (EOFError, OSError):
                return
            if body[0] == wire.QUIT:
                return  # unstarted jobs are re-dispatched by the supervisor
            if body[0] == wire.STOP:
                stop_when_idle = True
            else:
                local.extend(wire.decode_jobs(body))

"""Functions the pool tests send to workers (importable under spawn)."""

from __future__ import annotations

import os
import signal
import threading
import time


def square(x):
    return x * x


def add(a, b):
    return a + b


def identity(x):
    return x


def raise_value_error(message="boom"):
    raise ValueError(message)


def getpid(_=None):
    return os.getpid()


def getppid(_=None):
    return os.getppid()


def exit_now(code=0):
    os._exit(code)


def kill_self(sig=signal.SIGKILL):
    os.kill(os.getpid(), sig)


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def sleep_ignoring_sigterm(seconds):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(seconds)


def return_unpicklable(_=None):
    return threading.Lock()


class DiesOnUnpickle:
    """An argument whose unpickling kills the worker."""

    def __reduce__(self):
        return os._exit, (9,)


def _raise_on_unpickle():
    raise RuntimeError("cannot rebuild this argument")


class FailsOnUnpickle:
    def __reduce__(self):
        return _raise_on_unpickle, ()


def _parent_cannot_rebuild():
    # Works in the worker (never called there); fails when the parent unpickles.
    raise RuntimeError("cannot rebuild this result")


class FailsInParent:
    def __reduce__(self):
        return _parent_cannot_rebuild, ()


def return_fails_in_parent(_=None):
    return FailsInParent()


class BadException(Exception):
    """An exception that pickles but cannot be rebuilt (required args)."""

    def __init__(self, a, b):
        super().__init__(a)


def raise_bad_exception():
    raise BadException(1, 2)


def big_result_then_die(size):
    """Return ``size`` bytes, but die after writing half of them to the pipe.

    Fault injection: the worker's ``Connection._send`` is wrapped so that the
    kill lands deterministically in the middle of the message.
    """
    from multiprocessing.connection import Connection

    original = Connection._send

    def send_half_then_die(self, buf, write=os.write):
        if len(buf) >= size:
            original(self, memoryview(buf)[: len(buf) // 2], write)
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, buf, write)

    Connection._send = send_half_then_die
    return b"x" * size


def failing_initializer():
    raise RuntimeError("initializer failed")


def record_init(path):
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")


class Weakrefable:
    def __init__(self, value):
        self.value = value


def make_weakrefable(value):
    return Weakrefable(value)


def outcome_job(kind, value):
    """For the property test: return, raise, sleep briefly, or kill the worker."""
    if kind == "return":
        return value
    if kind == "raise":
        raise ValueError(value)
    if kind == "sleep":
        time.sleep(0.001 * (value % 5))
        return value
    os._exit(1)


IMPORT_GATE = threading.Event()
IMPORT_STARTED = threading.Event()
IMPORT_GATE_PID = None


def import_slow_module(_=None):
    import importlib

    return importlib.import_module("tests.engine.slow_import").VALUE


def soft_aware_sleep(seconds):
    """Sleep; report a soft time limit instead of failing."""
    from poolx.exceptions import SoftTimeLimitExceeded

    try:
        time.sleep(seconds)
        return "ok"
    except SoftTimeLimitExceeded:
        return "soft"


def swallow_soft_limit(seconds):
    from poolx.exceptions import SoftTimeLimitExceeded

    deadline = time.monotonic() + seconds
    while True:
        try:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "survived"
            time.sleep(remaining)
        except SoftTimeLimitExceeded:
            pass  # ignore it: the hard limit must still apply


def no_limit_job(x):
    """Must never see a SoftTimeLimitExceeded meant for another job."""
    return ("ok", x)


def allocate_until_stopped(step=10 * 2**20, cap=4 * 2**30):
    """Allocate (and touch) memory until killed; give up at ``cap``."""
    hoard = []
    total = 0
    while total < cap:
        hoard.append(bytearray(step))
        total += step
    return total


_KEPT = []


def allocate_and_keep(nbytes):
    _KEPT.append(bytearray(nbytes))
    return os.getpid()


def allocate_and_free(nbytes):
    block = bytearray(nbytes)
    del block
    return os.getpid()


def logged_job(path, i, die=False):
    """Append ``i`` to ``path`` (a side effect), then return it — or exit."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{i}\n".encode())
    finally:
        os.close(fd)
    if die:
        os._exit(7)
    return i


def logged_runs(path):
    """How many times each job of :func:`logged_job` ran."""
    from collections import Counter

    with open(path) as f:
        return Counter(int(line) for line in f)


def loaded_poolx_modules(_=None):
    """The poolx modules this process has imported (this module imports none)."""
    import sys

    return sorted(name for name in sys.modules if name == "poolx" or name.startswith("poolx."))


def sleep_then_touch(seconds, path):
    """Sleep, then create ``path``: the job's end, seen from outside."""
    time.sleep(seconds)
    open(path, "w").close()


def wait_for_file(path, timeout=60.0):
    """Block until ``path`` exists (a gate the test opens); bounded."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)
    return path


class CustomBaseError(BaseException):
    """A BaseException that is not an Exception (billiard's tests raise such)."""


def raise_base_exception(message):
    raise CustomBaseError(message)


def raise_system_exit(code=0):
    raise SystemExit(code)


def interrupt_self(catch=False):
    """SIGINT to the worker's own pid from a timer thread, as libraries that
    enforce their own timeouts do; waits (bounded) for the KeyboardInterrupt."""
    timer = threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        time.sleep(30)
    except KeyboardInterrupt:
        if catch:
            return "interrupted"
        raise
    return "not interrupted"


HOLDER = []  # a pool that a forked child finds here (and nowhere else on its stack)


def pool_copy_gc_spares_reused_fds():
    """In a forked child: reuse fd numbers the after-fork hook freed, then let
    the child's copy of the pool be garbage-collected; the new fds must stay
    open and untouched.  Exit code: 0 fine, 1 an fd was closed, 2 written to."""
    import gc

    pipes = [os.pipe() for _ in range(16)]  # take the lowest free numbers
    for r, _ in pipes:
        os.set_blocking(r, False)
    HOLDER.clear()
    gc.collect()
    for r, w in pipes:
        try:
            os.fstat(r)
            os.fstat(w)
        except OSError:
            os._exit(1)
        try:
            if os.read(r, 100):
                os._exit(2)
        except BlockingIOError:
            pass
    os._exit(0)


def pool_copy_refuses_jobs():
    """In a forked child: the copy of the parent's pool (HOLDER[0]) refuses
    a job with PoolNotRunning instead of queueing one nobody would run.
    Exit code: 0 refused, 1 accepted, 2 another error."""
    from poolx.exceptions import PoolNotRunning

    try:
        HOLDER[0].apply_async(square, (2,))
    except PoolNotRunning:
        os._exit(0)
    except BaseException:
        os._exit(2)
    os._exit(1)


def gated_len(path, data):
    wait_for_file(path)
    return len(data)


def raise_if_boom(value):
    if value == "boom":
        raise ValueError(value)
    return len(value)


def logged_then_boom(path, i, _padding=b""):
    """:func:`logged_job`, raising ValueError('boom') for item 0."""
    logged_job(path, i)
    if i == 0:
        raise ValueError("boom")
    return i


def boom_or_wait(arg):
    """ValueError('boom') for "boom"; otherwise wait for the file ``arg``."""
    if arg == "boom":
        raise ValueError(arg)
    return wait_for_file(arg)


def square_but_13(x):
    """``x * x``; ValueError for 13 (a failing item among good ones)."""
    if x == 13:
        raise ValueError("13")
    return x * x

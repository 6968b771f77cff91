"""Functions the shared-memory tests send to workers (importable under spawn)."""

from __future__ import annotations

import os
import pickle
import re
import signal
import threading
import time


def segments(prefix):
    """Names of the shared-memory segments whose name starts with ``prefix``."""
    return sorted(name for name in os.listdir("/dev/shm") if name.startswith(prefix))


def busy(prefix):
    """:func:`segments` but the free ones a pool keeps for reuse
    (arguments: ``<prefix><pool>-f<n>``, results: ``<prefix><pool>-r<pid>-f``)."""
    return [name for name in segments(prefix)
            if not re.fullmatch(r"\d+-(f\d+|r\d+-f)", name[len(prefix):])]


def seen(prefix, *args, **kwds):
    """How many segments exist while this job runs (its arguments' included,
    free ones not)."""
    return len(busy(prefix))


def size(data):
    return len(data)


def describe(data):
    return type(data).__name__, len(data), bytes(data[:3])


def make(n, kind="bytes"):
    data = b"r" * n
    return bytearray(data) if kind == "bytearray" else data


def make_many(n, count):
    return [b"%d" % i * n for i in range(count)]


def kill_self(data):
    os.kill(os.getpid(), signal.SIGKILL)


def die_while_writing_result(n):
    """Die (SIGKILL) while the worker writes this job's result segment."""
    from poolx.engine import payload

    def die(*args):
        os.kill(os.getpid(), signal.SIGKILL)

    payload._write_all = die
    return b"r" * n


def sleep_with(seconds, data):
    time.sleep(seconds)
    return len(data)


def sleep_then_make(seconds, n):
    time.sleep(seconds)
    return b"r" * n


def mutate(array):
    array[0] = 255
    return array


def echo(value):
    return value


def numpy_sum(array):
    return float(array.sum())


def same(a, b):
    """Whether two arguments arrived as one object (and so did their items)."""
    return a is b, a[0] is b[0]


def is_cyclic(items):
    return items[-1] is items


def make_shared(n):
    """A result that holds the same list (with a big bytes) twice."""
    inner = [b"s" * n]
    return inner, inner


def writable(array):
    return bool(array.flags.writeable)


def bump(array):
    array += 1  # in-place, as worker code often does
    return array


def make_read_only(n):
    import numpy as np

    return np.frombuffer(b"\0" * n, dtype=np.uint8)


def reads_wait_for(gate):
    """Initializer: this worker ignores SIGUSR2, and its segment reads wait
    until the file ``gate`` exists (a worker still reading its arguments)."""
    from poolx.engine import payload

    signal.signal(signal.SIGUSR2, signal.SIG_IGN)

    class _Os:
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def pread(fd, length, offset):
            while not os.path.exists(gate):
                time.sleep(0.01)
            return os.pread(fd, length, offset)

    payload.os = _Os()


def record_first_byte(path, data):
    with open(path, "wb") as f:
        f.write(data[:1])
    return len(data)


HOLDER: list = []  # a pool a forked child finds here (its copy of the parent's)


def copy_refuses_a_big_argument():
    """In a forked child: the copy of the parent's pool (HOLDER[0]) refuses
    a big argument with PoolNotRunning.  Exit code: 0 refused, 1 accepted,
    2 another error."""
    from poolx.exceptions import PoolNotRunning

    try:
        HOLDER[0].apply_async(size, (b"c" * (200 * 1024),))
    except PoolNotRunning:
        os._exit(0)
    except BaseException:
        os._exit(2)
    os._exit(1)

def _refuse(buffer):
    raise ValueError("this result cannot be rebuilt in the parent")


class Unloadable:
    """A result that pickles (one read-only out-of-band buffer) in the
    worker and fails to unpickle in the parent."""

    def __init__(self, n):
        self.data = b"u" * n

    def __reduce__(self):
        return _refuse, (pickle.PickleBuffer(self.data),)


def unloadable(n):
    return Unloadable(n)


class BlocksWhenFreedInAWorker:
    """An argument whose ``__del__`` blocks forever in a worker (as a
    close() of a dead connection may); harmless in the process that made it."""

    def __init__(self):
        self.maker = os.getpid()

    def __del__(self):
        if os.getpid() != self.maker:
            threading.Event().wait()


def take(value):
    return "returned"


def _rss():
    import psutil

    return psutil.Process().memory_info().rss


class _RssWhenPickled:
    def __init__(self, before):
        self.before = before

    def __reduce__(self):
        return tuple, ((self.before, _rss()),)


def rss_while_result_pickled(data):
    """(RSS with ``data`` alive, RSS while the result is being pickled)."""
    return _RssWhenPickled(_rss())

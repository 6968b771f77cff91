"""Tasks and worker init functions for the worker-pool tests.

Importable by name (``tests.worker.tasks``) so that forked workers, spawned
subprocesses and ``poolx worker --init`` all find them.  Tasks that must
block wait on files in a directory the test owns (workers are other
processes: no shared events), with a deadline.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from poolx import TaskSpace, get_broker

ts = TaskSpace("wt")

_NEVER = threading.Event()


def wait_for_file(path: str | os.PathLike, timeout: float = 30.0) -> bool:
    """Bounded polling for a file another process creates."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        _NEVER.wait(0.005)
    return True


def write_atomically(path: Path, text: str) -> None:
    """Write a file that others poll for: it appears complete or not at all."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def init(url: str, *args: object, **kw: object):
    """WorQ-style init_func: a broker exposing this module's tasks."""
    broker = get_broker(url)
    broker.expose(ts)
    return broker


def init_counting(url: str):
    """Init whose tasks count calls per worker (max_worker_tasks tests)."""
    broker = init(url)
    calls = [0]

    def count():
        calls[0] += 1
        return (os.getpid(), calls[0])

    broker.expose(count)
    return broker


def init_with_kwargs(url: str, tag: str = "", **kw: object):
    """Init that exposes a task returning what init received."""
    broker = init(url)

    def init_args():
        return {"url": url, "tag": tag, **kw}

    broker.expose(init_args)
    return broker


def init_fails(url: str):
    raise RuntimeError("this init always fails")


def init_not_a_broker(url: str):
    return 42


def init_poll_fast(url: str):
    """Init that shortens the orphan check, as WorQ's test does."""
    import poolx.pool.process as proc

    proc.WORKER_POLL_INTERVAL = 0.1
    return init(url)


@ts.task
def num(value):
    return int(value)


@ts.task
def add(values):
    return sum(values)


@ts.task
def echo(*args, **kw):
    return [list(args), kw]


@ts.task
def div(a, b):
    return a / b


@ts.task
def getpid():
    return os.getpid()


@ts.task
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@ts.task
def touch_and_wait(directory, name, timeout=30.0):
    """Create ``name.started``, wait for ``name.unlock``, write ``name.out``."""
    path = Path(directory)
    write_atomically(path / f"{name}.started", str(os.getpid()))
    if not wait_for_file(path / f"{name}.unlock", timeout):
        return "timed out"
    (path / f"{name}.out").write_text("done")
    return f"{name} done"


@ts.task
def soft_sleep(seconds):
    from poolx.exceptions import SoftTimeLimitExceeded

    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "slept"


@ts.task
def hog(megabytes, seconds):
    data = bytearray(megabytes * 2**20)
    for i in range(0, len(data), 4096):
        data[i] = 1
    time.sleep(seconds)
    return len(data)


@ts.task
def suicide():
    os.kill(os.getpid(), signal.SIGKILL)


@ts.task
def unpicklable_result():
    return threading.Lock()


@ts.task
def modules():
    """The modules this worker process has loaded."""
    import sys

    return sorted(sys.modules)


@ts.task
def count_then_unpicklable(directory):
    """Count this call in ``directory``, then return what cannot be sent back."""
    Path(directory, str(len(os.listdir(directory)) + 1)).touch()
    return threading.Lock()


@ts.task
def fail_times(directory, failures):
    """Count this call in ``directory`` (a file per attempt; attempts run one
    after another); raise ConnectionError for the first ``failures`` calls,
    then return the number of attempts."""
    attempt = len(os.listdir(directory)) + 1
    Path(directory, str(attempt)).touch()
    if attempt <= failures:
        raise ConnectionError(f"attempt {attempt} fails")
    return attempt


@ts.task
def fail(message):
    """Raise ValueError(message): a task that fails with the error text asked for."""
    raise ValueError(message)

"""Functions the executor tests send to workers (importable under spawn)."""

from __future__ import annotations

import os
import sys
import threading
import time
from pickle import PicklingError, UnpicklingError

INIT_STATE = "uninitialized"


def mul(x, y):
    return x * y


def capture(*args, **kwargs):
    return args, kwargs


def getpid(_=None):
    return os.getpid()


def init(value):
    global INIT_STATE
    INIT_STATE = value


def get_init_state():
    return INIT_STATE


def init_fail():
    raise ValueError("error in initializer")


def raise_runtime_error():
    raise RuntimeError(123)  # the line the traceback test looks for


def exit_call():
    sys.exit(3)


def die(code=7):
    os._exit(code)


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def sleep_and_print(seconds, message):
    time.sleep(seconds)
    print(message, flush=True)


def log_run(path, value):
    """Record that this call ran (a side effect the tests can count)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{value}\n".encode())
    finally:
        os.close(fd)
    return value


def runs(path):
    try:
        with open(path) as f:
            return [line.strip() for line in f]
    except FileNotFoundError:
        return []


def wait_fifo(path, value=None):
    """Block until the test opens ``path`` (a FIFO) for writing and closes it."""
    with open(path) as f:
        f.read()
    return value


def release_fifo(path):
    with open(path, "w"):
        pass


def return_lock():
    return threading.Lock()


class ErrorAtPickle:
    def __reduce__(self):
        raise PicklingError("error in pickle")


def _raise_unpickling_error():
    raise UnpicklingError("error at unpickle")


class ErrorAtUnpickle:
    def __reduce__(self):
        return _raise_unpickling_error, ()


class ExitAtUnpickle:
    def __reduce__(self):
        return os._exit, (9,)


def return_error_at_unpickle():
    return ErrorAtUnpickle()


class NeedsTwoArgs(Exception):
    """Pickles, but cannot be rebuilt (its __init__ needs two arguments)."""

    def __init__(self, a, b):
        super().__init__(a)


def raise_needs_two_args():
    raise NeedsTwoArgs(1, 2)


def soft_aware_sleep(seconds):
    from poolx.exceptions import SoftTimeLimitExceeded

    try:
        time.sleep(seconds)
        return "finished"
    except SoftTimeLimitExceeded:
        return "soft limit"


def allocate_forever(step=20 * 2**20, cap=4 * 2**30):
    hoard = []
    while len(hoard) * step < cap:
        hoard.append(bytearray(step))
    return len(hoard)


class MyObject:
    def method(self):
        return 1


def make_object(_):
    return MyObject()


def die_with_data(data):
    os._exit(1)

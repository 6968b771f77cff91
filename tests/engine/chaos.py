"""Jobs with a side effect and a chosen fate, for the exactly-once soak tests.

Each job appends ``"<i>\\n"`` to a log file *first* (the side effect), then
meets its fate.  Importable under spawn.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import time


def fated_job(path, i, fate, arg=0.0):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{i}\n".encode())
    finally:
        os.close(fd)
    if fate == "ok":
        return i
    if fate == "raise":
        raise ValueError(i)
    if fate == "exit":
        os._exit(7)
    if fate == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fate == "segfault":
        faulthandler.disable()  # no traceback dump on stderr for an intended crash
        ctypes.string_at(0)
    if fate == "sleep":  # near the job's hard limit: either side of it
        time.sleep(arg)
        return i
    if fate == "memory":
        hoard = []
        while True:  # until the memory limit kills the worker
            hoard.append(bytearray(8 * 2**20))
    raise AssertionError(fate)

"""Jobs for tests/engine/test_robustness.py, importable under spawn."""

from __future__ import annotations

import os
import signal
import sys
import time


class _ExitsWhenRebuilt:
    """Pickles fine in the worker; rebuilding it in the parent calls sys.exit."""

    def __reduce__(self):
        return (sys.exit, (2,))


def result_that_exits_when_rebuilt(_=None):
    return _ExitsWhenRebuilt()


def ignore_sigterm_then_sleep(seconds, ready_path=None):
    """Install a SIGTERM handler that ignores it (touching ``ready_path``
    once it is installed), then sleep."""
    signal.signal(signal.SIGTERM, lambda *_: None)  # a graceful-shutdown handler
    if ready_path is not None:
        open(ready_path, "w").close()
    time.sleep(seconds)
    return seconds


def fork_lingering_child_then_die(linger):
    """A library that forks a helper without exec, then the worker crashes:
    the grandchild holds every fd the worker had."""
    if os.fork() == 0:
        time.sleep(linger)
        os._exit(0)
    os._exit(1)


def pid_after(seconds, started_path=None):
    if started_path is not None:
        open(started_path, "w").close()
    time.sleep(seconds)
    return os.getpid()

"""poolx: a process pool that never hangs, and a small reliable task queue.

Two faces, one engine (see ``docs/`` and DESIGN.md):

* :class:`poolx.Pool` — a drop-in replacement for ``multiprocessing.Pool``
  (and a superset of billiard's pool) built around a single supervisor thread
  that owns all pool state, so a dying worker fails exactly its job instead of
  hanging the program.  :class:`poolx.ProcessPoolExecutor` is the same engine
  behind ``concurrent.futures``' API.
* The WorQ-compatible task queue — :func:`get_broker`, :func:`get_queue`,
  :class:`Task`, :class:`Retry`, :class:`TaskSpace`, :class:`TaskFailure` — loaded lazily so
  that pool users do not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from poolx.exceptions import (
    MemoryLimitExceeded,
    RestartFreqExceeded,
    SoftTimeLimitExceeded,
    Terminated,
    TimeLimitExceeded,
    TimeoutError,
)

if TYPE_CHECKING:
    from poolx.core import get_broker, get_queue
    from poolx.engine.api import Pool
    from poolx.engine.executor import ProcessPoolExecutor
    from poolx.exceptions import BrokenPoolError, WorkerLostError
    from poolx.task import Retry, Task, TaskFailure, TaskSpace

__version__ = "0.1.0"

# Imported on first use (PEP 562): task-queue users do not load the engine,
# pool users do not load the task queue.
_LAZY = {
    "WorkerLostError": "poolx.exceptions",  # also concurrent.futures' BrokenProcessPool
    "BrokenPoolError": "poolx.exceptions",
    "Pool": "poolx.engine.api",
    "ProcessPoolExecutor": "poolx.engine.executor",
    "get_broker": "poolx.core",
    "get_queue": "poolx.core",
    "Task": "poolx.task",
    "Retry": "poolx.task",
    "TaskSpace": "poolx.task",
    "TaskFailure": "poolx.task",
}

__all__ = [
    "TimeoutError",
    "SoftTimeLimitExceeded",
    "TimeLimitExceeded",
    "WorkerLostError",
    "Terminated",
    "RestartFreqExceeded",
    "MemoryLimitExceeded",
    "BrokenPoolError",
    "Pool",
    "ProcessPoolExecutor",
    "get_broker",
    "get_queue",
    "Task",
    "Retry",
    "TaskSpace",
    "TaskFailure",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'poolx' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

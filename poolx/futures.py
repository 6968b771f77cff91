"""``concurrent.futures``, with poolx's :class:`ProcessPoolExecutor`.

A drop-in for the standard library's module: every public name of
``concurrent.futures`` is here, the same objects, except
``ProcessPoolExecutor``, which is poolx's (:mod:`poolx.engine.executor`).
So ``import poolx.futures as cf`` (or changing ``from concurrent.futures
import ...`` to ``from poolx.futures import ...``) is the whole migration.
See ``docs/futures.rst`` for what differs and what poolx adds.
"""

from __future__ import annotations

from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    BrokenExecutor,
    CancelledError,
    Executor,
    Future,
    InvalidStateError,
    ThreadPoolExecutor,
    TimeoutError,
    as_completed,
    wait,
)
from concurrent.futures.process import BrokenProcessPool

from poolx.engine.executor import ProcessPoolExecutor

__all__ = [
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "ALL_COMPLETED",
    "CancelledError",
    "TimeoutError",
    "InvalidStateError",
    "BrokenExecutor",
    "BrokenProcessPool",
    "Future",
    "Executor",
    "wait",
    "as_completed",
    "ProcessPoolExecutor",
    "ThreadPoolExecutor",
]

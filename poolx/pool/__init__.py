"""``poolx.pool``: the pool's public names, and WorQ's WorkerPools beside them.

* :class:`Pool` and its result classes live in :mod:`poolx.engine`; they are
  re-exported here lazily (PEP 562), so that ``import poolx.pool.thread``
  does not load the process-pool engine it never uses.
* :mod:`poolx.pool.thread`, :mod:`poolx.pool.process` — WorQ's WorkerPools
  (their import paths are WorQ's, with ``worq`` replaced by ``poolx``).

``RemoteTraceback`` and ``MaybeEncodingError`` are the standard library's
classes, so code that catches them keeps working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.pool import MaybeEncodingError, RemoteTraceback

    from poolx.engine.api import Pool
    from poolx.engine.results import (
        ApplyResult,
        AsyncResult,
        IMapIterator,
        IMapUnorderedIterator,
        MapResult,
    )
    from poolx.exceptions import TimeoutError

_LAZY = {
    "Pool": "poolx.engine.api",
    "ApplyResult": "poolx.engine.results",
    "AsyncResult": "poolx.engine.results",
    "MapResult": "poolx.engine.results",
    "IMapIterator": "poolx.engine.results",
    "IMapUnorderedIterator": "poolx.engine.results",
    "RemoteTraceback": "multiprocessing.pool",
    "MaybeEncodingError": "multiprocessing.pool",
    "TimeoutError": "poolx.exceptions",
}

__all__ = [
    "Pool",
    "ApplyResult",
    "AsyncResult",
    "MapResult",
    "IMapIterator",
    "IMapUnorderedIterator",
    "RemoteTraceback",
    "MaybeEncodingError",
    "TimeoutError",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'poolx.pool' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

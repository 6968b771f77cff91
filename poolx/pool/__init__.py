"""The process-pool engine (and, beside it, WorQ's WorkerPools).

Modules, one job each:

* :mod:`poolx.pool.api` — :class:`Pool`, the public API and argument checks;
* :mod:`poolx.pool.supervisor` — the one thread that owns all pool state;
* :mod:`poolx.pool.limits` — time and memory limits of running jobs;
* :mod:`poolx.pool.worker` — the loop each worker process runs;
* :mod:`poolx.pool.wire` — framing and codecs on each worker's pipe;
* :mod:`poolx.pool.jobs` — the job state machine;
* :mod:`poolx.pool.results` — ``ApplyResult``, ``MapResult``, ``IMapIterator``;
* :mod:`poolx.pool.callbacks` — the thread that runs user callbacks;
* :mod:`poolx.pool.options` — argument validation;
* :mod:`poolx.pool.memory` — measuring a worker's memory (psutil);
* :mod:`poolx.pool.log` — the engine's logger, imported lazily;
* :mod:`poolx.pool.thread`, :mod:`poolx.pool.process` — WorQ's WorkerPools.

``RemoteTraceback`` and ``MaybeEncodingError`` are the standard library's
classes, so code that catches them keeps working.
"""

from multiprocessing.pool import MaybeEncodingError, RemoteTraceback

from poolx.exceptions import TimeoutError
from poolx.pool.api import Pool
from poolx.pool.results import (
    ApplyResult,
    AsyncResult,
    IMapIterator,
    IMapUnorderedIterator,
    MapResult,
)

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

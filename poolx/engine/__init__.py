"""The process-pool engine (layer L1): imports only poolx's L0 modules.

Modules, one job each (the parent side runs on one supervisor thread):

* :mod:`poolx.engine.api` — :class:`Pool`, the public API; pickles calls;
* :mod:`poolx.engine.config` — ``PoolConfig``, the validated settings;
* :mod:`poolx.engine.supervisor` — the one thread that owns all pool state:
  the loop, the inbox, the commands, shutdown and stats;
* :mod:`poolx.engine.workers` — worker handles, spawn/retire/kill/reap, pipe I/O;
* :mod:`poolx.engine.dispatch` — the job queue, which worker gets which job, prefetch;
* :mod:`poolx.engine.health` — restart-frequency and start-failure breakers;
* :mod:`poolx.engine.limits` — time and memory limits of running jobs;
* :mod:`poolx.engine.timers` — the supervisor's timer heap;
* :mod:`poolx.engine.jobs` — the job state machine;
* :mod:`poolx.engine.results` — ``ApplyResult``, ``MapResult``, ``IMapIterator``
  and the ``JobSink`` interface the supervisor writes them through;
* :mod:`poolx.engine.callbacks` — the thread that runs user callbacks;
* :mod:`poolx.engine.progress` — counting a call's items for its progress
  bar (``progress_bar=``), shown from a thread of its own;
* :mod:`poolx.engine.worker` — the loop each worker process runs;
* :mod:`poolx.engine.wire` — framing and codecs on each worker's pipe;
* :mod:`poolx.engine.pickling` — how calls, functions and values are pickled;
* :mod:`poolx.engine.executor` — ``ProcessPoolExecutor`` (``concurrent.futures``
  on the pool), and :mod:`poolx.engine.executor_worker`, its part in workers;
* :mod:`poolx.engine.memory` — measuring a worker's memory (psutil);
* :mod:`poolx.engine.log` — the engine's logger, imported lazily.

This package's ``__init__`` imports nothing: a spawned worker that needs only
:mod:`poolx.engine.worker` must not load the supervisor and the API with it.
"""

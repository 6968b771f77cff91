"""The queue adapter: a :class:`poolx.Pool` consuming a task-queue broker
(layer L6, above :mod:`poolx.core`; it uses the engine's public API only).

The pool stays the pool (the engine owns workers, timeouts and memory
limits); the broker stays the broker (its backend owns task state).  The
consumer owns only the set of tasks it has *taken* from the queue and not
yet answered::

    broker's queue                  the pool's process                              workers
    ──────────────                  ──────────────────                              ───────
    get ──next_tasks─▶ intake thread: waits for room, takes a batch,
                       pool.submit_jobs(batch of run_task, limits) ─────────▶ run_task: invoke
                            │ in flight {key: InFlight}                                 │
    set_task_timeout ◀──────┤ heartbeat thread: heartbeats (leases) of                  │
    register_pool ◀─────────┤ in-flight tasks; this pool's status                       │
                            │                                                           │
    set_result ◀────────────┴ the answer thread, batches: the outcome ◀── value / error ┘
    requeue_task ◀──          (value, TaskFailure saying what happened,
                               or back to the queue if it never started)

Modules, one job each:

* :mod:`poolx.consumer.adapter` — :class:`BrokerConsumer`: life cycle, the
  in-flight table, carrying out outcomes, the pool's status;
* :mod:`poolx.consumer.intake` — the intake thread (capacity, batches,
  backoff, handing tasks to the pool with their limits);
* :mod:`poolx.consumer.answers` — the answer thread (the pool's answers,
  settled in batches);
* :mod:`poolx.consumer.outcomes` — pure functions from the pool's answer
  (a value, or an exception *type*) to the task's outcome;
* :mod:`poolx.consumer.failures` — the bounded list of recent failures a
  pool publishes with its status;
* :mod:`poolx.consumer.heartbeats` — heartbeats of running tasks, shared
  with :class:`poolx.pool.thread.WorkerPool`;
* :mod:`poolx.consumer.inworker` — :func:`init_worker` and :func:`run_task`,
  the only code that runs in the workers.

Tasks run in workers in one of two ways.  By default the consumer sends the
callable that *this* process's broker exposes along with the task (so any
``poolx.Pool`` can consume any broker).  With ``worker_broker=True`` the pool's
initializer is :func:`init_worker`, which builds a broker in each worker
(WorQ's ``init_func(url)``), and workers invoke tasks on that broker — what
:class:`poolx.pool.process.WorkerPool` does.

Names are loaded on first use (PEP 562), so a worker that imports
:mod:`poolx.consumer.inworker`, or a thread pool that imports the
heartbeats, loads nothing else of this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from poolx.consumer.adapter import BrokerConsumer
    from poolx.consumer.inworker import init_worker, run_task

__all__ = [
    "BrokerConsumer",
    "init_worker",
    "run_task",
    "PREFETCH_WINDOW",
    "PREFETCH_MAX",
    "GIVE_BACK_AFTER",
    "STATUS_INTERVAL",
    "STOP_RETRY_TIMEOUT",
    "log_failure",
]

PREFETCH_WINDOW = 0.05
"""Seconds of predicted work each worker may hold ahead of the task it runs:
tasks that take longer on average are never prefetched, and a burst of tiny
tasks is taken in batches (one backend call for many tasks)."""
PREFETCH_MAX = 64
"""At most this many extra tasks per worker are taken ahead."""
GIVE_BACK_AFTER = 0.5
"""Seconds a task taken ahead (in a batch) may wait for a free worker before
the consumer returns it to the queue, where an idle pool can take it."""
STATUS_INTERVAL = 5.0
"""Default seconds between two status heartbeats in the pool registry."""
STOP_RETRY_TIMEOUT = 3.0
"""Once a consumer stops, a backend operation (storing a result, giving a
task back, unregistering) is retried at most this long while the backend is
unreachable (``redis://``'s ``retry_timeout`` is shortened to it), so that a
pool whose Redis went away stops within seconds; what could not be stored
is logged, one line each."""


def log_failure(logger: Any, message: str, *args: Any) -> None:
    """Log the exception being handled as one ERROR line ending with its
    cause (``Type: message``); the traceback only when ``logger`` is
    enabled for DEBUG.

    :param logger: Where to log.
    :param message: A ``%``-format, as for :meth:`logging.Logger.error`.
    :param args: Its arguments.
    """
    import logging
    import sys

    error = sys.exc_info()[1]
    cause = "" if error is None else f": {type(error).__name__}: {error}"
    logger.error(message + "%s", *args, cause, exc_info=logger.isEnabledFor(logging.DEBUG))

_LAZY = {
    "BrokerConsumer": "poolx.consumer.adapter",
    "init_worker": "poolx.consumer.inworker",
    "run_task": "poolx.consumer.inworker",
}


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'poolx.consumer' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

"""The consumer's side inside each pool worker process (layer L6).

Owned here: :func:`init_worker` (a pool initializer that builds the worker's
own broker, WorQ's ``init_func(url)``) and :func:`run_task` (what the pool
runs for each task).  Only these run in workers, so this module imports only
the task layer and :mod:`poolx.exceptions`: a spawned worker loads nothing
of the consumer's parent-side machinery.

The soft time limit crosses back to the pool's process as its type:
:func:`run_task` lets :class:`~poolx.exceptions.SoftTimeLimitExceeded`
propagate out of the task instead of recording it, so the pool reports it as
that exception and :mod:`poolx.consumer.outcomes` maps it by type.  It
carries the seconds the task ran as its :data:`SECONDS` attribute (kept by
pickling), for the run-time histogram.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from poolx.exceptions import SoftTimeLimitExceeded
from poolx.task import FunctionTask

__all__ = ["SECONDS", "init_worker", "run_task"]

_worker_broker: Any = None
"""The broker :func:`init_worker` built in *this* worker process (worker-local)."""

_REPORTED_BY_TYPE = (SoftTimeLimitExceeded,)

SECONDS = "poolx_seconds"
"""The attribute of a :class:`~poolx.exceptions.SoftTimeLimitExceeded`
raised out of :func:`run_task` that holds how long the task ran."""


def init_worker(init_func: Callable[..., Any], init_args: tuple = (), init_kwargs: dict | None = None) -> None:
    """Pool initializer: build this worker's broker with
    ``init_func(*init_args, **init_kwargs)`` (WorQ passes the broker URL as the
    first argument) and keep it for :func:`run_task`.

    :raises TypeError: if ``init_func`` does not return a broker (the pool
        then reports the failing initializer).
    """
    global _worker_broker
    broker = init_func(*init_args, **(init_kwargs or {}))
    if not callable(getattr(broker, "invoke", None)):
        raise TypeError(
            f"the worker init function {getattr(init_func, '__qualname__', init_func)!r} "
            f"must return a broker, not {type(broker).__name__}"
        )
    _worker_broker = broker


class _OneTask:
    """A stand-in broker for :meth:`FunctionTask.invoke` that knows one task."""

    __slots__ = ("name", "tasks")

    def __init__(self, queue_name: str, name: str, func: Callable[..., Any]) -> None:
        self.name = queue_name
        self.tasks = {name: func}


def run_task(task: FunctionTask, func: Callable[..., Any] | None,
             queue_name: str) -> tuple[Any, float, int]:
    """Run one task in a worker; return ``(outcome, seconds it ran, this
    worker's pid)``.

    The outcome is the task's value, or a :class:`~poolx.task.TaskFailure`
    (an exception in the task, an unknown task name); a
    :class:`~poolx.exceptions.SoftTimeLimitExceeded` the task did not catch
    is raised to the pool (with the seconds the task ran as its
    :data:`SECONDS` attribute).  With ``func`` None the task is invoked on the
    broker :func:`init_worker` built; otherwise ``func`` is the callable the
    consumer's broker exposes under that name.
    """
    started = time.perf_counter()
    try:
        if func is None:
            broker = _worker_broker
            if broker is None:
                raise RuntimeError("no worker broker: the pool's initializer must be poolx.consumer.init_worker")
            outcome = broker.invoke(task, return_result=True, reraise=_REPORTED_BY_TYPE)
        else:
            outcome = task.invoke(_OneTask(queue_name, task.name, func), return_result=True,  # type: ignore[arg-type]
                                  reraise=_REPORTED_BY_TYPE)
    except SoftTimeLimitExceeded as err:
        setattr(err, SECONDS, time.perf_counter() - started)
        raise
    return outcome, time.perf_counter() - started, os.getpid()

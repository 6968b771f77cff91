"""Constants of the task-queue layer (WorQ's ``worq.const`` under poolx's name).

Owned here: the default queue name, time units, the task status values that
``Deferred.status`` reports, and the singleton markers that storage backends
hand back instead of a serialized message.

Status values are plain strings so that every backend (memory, Redis) can
store them as they are::

    pending     a task waiting for its Deferred arguments
    scheduled   a task waiting for its due time (``delay``/``eta``, or a
                retry's back-off)
    enqueued    a task waiting in the queue for a worker
    processing  a worker has taken the task
    completed   the result is stored and waiting to be read

The markers keep their identity through pickling (``pickle.loads(pickle.dumps(
TASK_EXPIRED)) is TASK_EXPIRED``), so they can cross process boundaries.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT",
    "MINUTE",
    "HOUR",
    "DAY",
    "PENDING",
    "SCHEDULED",
    "ENQUEUED",
    "PROCESSING",
    "COMPLETED",
    "STATUS_VALUES",
    "TASK_EXPIRED",
    "TASK_CANCELLED",
]

DEFAULT = "default"

MINUTE = 60
HOUR = MINUTE * 60
DAY = HOUR * 24

PENDING = "pending"
SCHEDULED = "scheduled"
ENQUEUED = "enqueued"
PROCESSING = "processing"
COMPLETED = "completed"

STATUS_VALUES = frozenset([PENDING, SCHEDULED, ENQUEUED, PROCESSING, COMPLETED])


class _Marker:
    """A named singleton that survives pickling as itself."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return f"<{self._name}>"

    def __reduce__(self) -> str:
        # Pickle by reference to the module-level name: unpickling returns
        # the very same object, so ``is`` comparisons keep working.
        return self._name


TASK_EXPIRED = _Marker("TASK_EXPIRED")
"""Returned by backends for a task whose result can no longer arrive."""

TASK_CANCELLED = _Marker("TASK_CANCELLED")
"""Stored as the outcome of a cancelled task (``Broker.cancel``): readers
turn it into a :class:`~poolx.task.TaskCancelled` naming the task."""

"""The recent failures a worker pool publishes with its status (layer L6).

Owned here: :class:`RecentFailures` — a bounded list of the last
:data:`KEPT` tasks that failed for good in one consumer (task name, id,
queue, a truncated error text, the worker's pid, when), newest first — and
the format of its records, which :class:`~poolx.consumer.BrokerConsumer`
publishes under ``"failed"`` in its status record and
:class:`poolx.status.StatusReader` merges across pools (``poolx status``,
the dashboard).

A record carries nothing the stored :class:`~poolx.task.TaskFailure` does
not: its error text is the failure's ``'Type: message'`` (never a
traceback), any URL in it redacted
(:func:`~poolx.queue.urls.redact_urls`), cut to :data:`TEXT_CHARS` characters, as are the task's name and
id, so that a pool's status record stays small whatever its tasks raise.

Like :class:`~poolx.tally.TaskTally`, it has no lock of its own: its owner
calls it under the consumer's lock.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from poolx.queue.urls import redact_urls
from poolx.task import TaskFailure

__all__ = ["KEPT", "TEXT_CHARS", "RecentFailures", "clip"]

KEPT = 20
"""Failures a consumer keeps (and publishes): the oldest goes first."""

TEXT_CHARS = 200
"""A record's error text, task name and id are cut to this many characters."""


def clip(text: Any, limit: int = TEXT_CHARS) -> str:
    """``str(text)``, cut to ``limit`` characters (the last one ``…`` when cut)."""
    text = str(text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


class RecentFailures:
    """The last ``kept`` final failures of one consumer.

    :param kept: How many are kept (at least 1).
    """

    __slots__ = ("_records",)

    def __init__(self, kept: int = KEPT) -> None:
        if kept < 1:
            raise ValueError(f"kept must be at least 1, not {kept}")
        self._records: deque[dict[str, Any]] = deque(maxlen=kept)

    def add(self, failure: TaskFailure, worker: int | None, when: float) -> None:
        """A task failed for good.

        :param failure: What was stored as its result.
        :param worker: The pid of the worker that ran it (None if it never
            reached one).
        :param when: When it failed (``time.time()``).
        """
        self._records.append({
            "task": clip(failure.task_name),
            "id": clip(failure.task_id),
            "queue": clip(failure.queue),
            # Redacted before the cut, which could leave a URL's password
            # unrecognisable; of a bounded prefix (this runs under a lock).
            "error": clip(redact_urls(str(failure.error)[:4 * TEXT_CHARS])),
            "worker": worker,
            "time": when,
        })

    def records(self) -> list[dict[str, Any]]:
        """The failures kept, newest first (copies: JSON-ready)."""
        return [dict(record) for record in reversed(self._records)]

    def __len__(self) -> int:
        return len(self._records)

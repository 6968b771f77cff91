"""What ``poolx status`` shows, as data: the one home of the fleet's status.

Owned here: :class:`StatusReader` — reads the pool registry
(``live_pools``, the records worker pools publish as their heartbeat), queue
sizes, the next queued tasks and the periodic entries of a task queue URL, and returns them as one
JSON-ready dict (the schema of ``poolx status --json``) — with the recent
failures of every pool merged into one list (:func:`merge_failures`) — and
:class:`StatusUnavailable`, the error when the broker cannot be read.  Two
users: the ``poolx status`` command (:mod:`poolx.cli`) and the web
dashboard (:mod:`poolx.dashboard`), which polls it.

The reader keeps one broker per queue name, so a caller that reads again
and again (``poolx status --watch``, the dashboard) reuses its connections;
:meth:`StatusReader.close` releases them.  Nothing here writes to the
broker, and every URL it returns is redacted (no password).

Layer: just below the command line; it uses :mod:`poolx.core` and
:mod:`poolx.queue` only.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from poolx.const import DEFAULT
from poolx.core import Broker, get_broker
from poolx.queue.urls import redact_url, redact_urls

__all__ = ["StatusReader", "StatusUnavailable", "merge_failures"]

T = TypeVar("T")


class StatusUnavailable(Exception):
    """The broker could not be read (unreachable, or it failed).  The
    message names the URL without its password."""


class StatusReader:
    """Reads the status of the worker pools and queues of one task queue URL.

    :param url: The task queue URL (``redis://...``, or ``memory://`` for the
        pools of this process).
    :raises ValueError: for a malformed URL or an unknown scheme.
    :raises ImportError: when the backend's library is missing (redis-py).

    Thread-safe: the dashboard's request threads share one reader.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._brokers: dict[str, Broker] = {}
        self.broker(DEFAULT)  # a bad URL fails here, not at the first read

    @property
    def display_url(self) -> str:
        """The URL as shown to people: any password replaced by ``***``."""
        return redact_url(self.url)

    def broker(self, queue: str = DEFAULT) -> Broker:
        """The reader's broker for ``queue`` (made once, then reused).

        :raises ValueError: for a queue name the backend cannot have.
        :raises StatusUnavailable: when making it needs the server (a
            cluster client connects at once) and the server is unreachable.
        """
        with self._lock:
            broker = self._brokers.get(queue)
            if broker is None:
                try:
                    broker = get_broker(self.url, queue)
                except (ValueError, ImportError):
                    raise
                except Exception as err:
                    raise StatusUnavailable(
                        f"cannot reach {redact_url(self.url)}: {type(err).__name__}: {err}") from None
                self._brokers[queue] = broker
            return broker

    def _reach(self, call: Callable[[], T]) -> T:
        """Run one broker call; any failure becomes :class:`StatusUnavailable`."""
        try:
            return call()
        except Exception as err:
            raise StatusUnavailable(
                f"cannot reach {redact_url(self.url)}: {type(err).__name__}: {err}") from None

    def _optional(self, call: Callable[[], T]) -> T | None:
        """:meth:`_reach` for an optional backend method: None if the
        backend does not have it (NotImplementedError)."""

        def attempt() -> T | None:
            try:
                return call()
            except NotImplementedError:
                return None

        return self._reach(attempt)

    def live_pools(self) -> list[dict[str, Any]]:
        """The records of every live worker pool on the URL (whatever queue
        each consumes), as the pools published them; unreadable records are
        skipped."""
        pools = []
        for text in self._reach(self.broker().taskqueue.live_pools):
            try:
                info = json.loads(text)
            except ValueError:
                continue
            if isinstance(info, dict):
                pools.append(info)
        return pools

    def scheduled(self, queue: str) -> int | None:
        """How many tasks of ``queue`` wait for their due time (``delay``,
        ``eta``, a retry's back-off); None if the backend cannot schedule."""
        return self._optional(self.broker(queue).taskqueue.scheduled_size)

    def queued_tasks(self, queue: str, limit: int, now: float | None = None) -> list[dict[str, Any]] | None:
        """The next ``limit`` tasks waiting in ``queue``, the next one first:
        ``{"id", "name", "enqueued_at", "age"}`` each; None if the backend
        cannot list them.

        :param now: The time the ages are measured at (default: now).
        """
        if limit <= 0:
            return []
        now = time.time() if now is None else now
        store = self.broker(queue).taskqueue
        tasks = self._optional(lambda: store.queued_tasks(limit))
        if tasks is None:
            return None
        return [
            {"id": task.task_id, "name": task.name, "enqueued_at": task.enqueued_at,
             "age": None if task.enqueued_at is None else max(0.0, now - task.enqueued_at)}
            for task in tasks
        ]

    def periodic(self, queue: str, now: float | None = None) -> list[dict[str, Any]] | None:
        """The periodic entries of ``queue``, the next to run first:
        ``{"name", "task", "schedule", "next_run", "due_in"}`` each
        (``next_run`` in seconds since the epoch by the backend's clock,
        ``due_in`` seconds from ``now``, negative when a tick is late);
        None if the backend cannot store periodic tasks."""
        now = time.time() if now is None else now
        store = self.broker(queue).taskqueue
        entries = self._optional(lambda: store.periodic_entries()[1])
        if entries is None:
            return None
        return [
            {"name": entry.name, "task": entry.task, "schedule": entry.schedule,
             "next_run": entry.next_run, "due_in": entry.next_run - now}
            for entry in entries
        ]

    def read(self, queues: Sequence[str] = (), pools: Sequence[str] = (), tasks: int = 0,
             failed: int = 0) -> dict[str, Any]:
        """The status, as ``poolx status --json`` prints it.

        :param queues: Only these queues and the pools consuming them
            (default: ``default`` and every queue a live pool consumes).
        :param pools: Only the pools of these names.
        :param tasks: List the next ``tasks`` tasks of each queue.
        :param failed: List the last ``failed`` tasks that failed in the
            pools shown (see :func:`merge_failures`).
        :returns: ``{"url", "time", "pools": [record...], "queues": {name:
            {"waiting", "scheduled", "in_flight", "tasks", "periodic"}},
            "failed": [failure...]}``; pools sorted by host, name and pid,
            without the ``"failed"`` list each publishes (merged into
            ``"failed"``); ``periodic`` as :meth:`periodic` returns it.
        :raises StatusUnavailable: the broker could not be read.
        :raises ValueError: a queue in ``queues`` is not a valid name.
        """
        now = time.time()
        found = self.live_pools()
        if queues:
            found = [p for p in found if str(p.get("queue", DEFAULT)) in queues]
        if pools:
            found = [p for p in found if str(p.get("name")) in pools]
        found.sort(key=lambda info: (str(info.get("host")), str(info.get("name")), info.get("pid") or 0))
        if queues:
            names = list(dict.fromkeys(queues))
        else:
            names = list(dict.fromkeys([DEFAULT, *(str(p.get("queue", DEFAULT)) for p in found)]))
        listed = {}
        for name in names:
            try:
                broker = self.broker(name)
            except ValueError:
                if name in queues:
                    raise  # asked for by name: the caller's mistake
                continue  # a pool record names a queue this backend cannot have: skip it
            size = self._reach(lambda broker=broker: len(broker))  # type: ignore[misc]
            in_flight = sum(len(p.get("in_flight") or ()) for p in found if p.get("queue") == name)
            listed[name] = {"waiting": size, "scheduled": self.scheduled(name), "in_flight": in_flight,
                            "tasks": self.queued_tasks(name, tasks, now),
                            "periodic": self.periodic(name, now)}
        if not queues:
            self._forget_except(names)
        recent = merge_failures(found, failed, now)
        for info in found:
            info.pop("failed", None)
        return {"url": redact_url(self.url), "time": now, "pools": found, "queues": listed,
                "failed": recent}

    def _forget_except(self, names: Sequence[str]) -> None:
        """Close the brokers of queues no live pool consumes any more: a
        long-running reader (the dashboard) keeps one connection per queue it
        shows, not per queue it ever showed."""
        keep = {DEFAULT, *names}
        with self._lock:
            gone = [self._brokers.pop(name) for name in list(self._brokers) if name not in keep]
        _close_all(gone)

    def close(self) -> None:
        """Close the brokers' connections (the reader can still be used: it
        opens new ones)."""
        with self._lock:
            brokers, self._brokers = list(self._brokers.values()), {}
        _close_all(brokers)

    def __enter__(self) -> StatusReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def merge_failures(pools: Sequence[dict[str, Any]], limit: int, now: float) -> list[dict[str, Any]]:
    """The last ``limit`` failures of all ``pools`` (their status records),
    newest first: each ``{"task", "id", "queue", "error", "worker", "time",
    "age", "pool", "host"}`` — a record as the pool published it
    (:class:`poolx.consumer.failures.RecentFailures`), its age at ``now``, and
    the name and host of its pool.  Malformed records are skipped."""
    if limit <= 0:
        return []
    merged = []
    for info in pools:
        records = info.get("failed")
        if not isinstance(records, list):
            continue
        for record in records:
            if not isinstance(record, dict) or not isinstance(record.get("time"), (int, float)):
                continue
            worker = record.get("worker")
            merged.append({
                "task": str(record.get("task")), "id": str(record.get("id")),
                "queue": str(record.get("queue")), "error": redact_urls(str(record.get("error"))),
                "worker": worker if isinstance(worker, int) and not isinstance(worker, bool) else None,
                "time": record["time"], "age": max(0.0, now - record["time"]),
                "pool": str(info.get("name")), "host": str(info.get("host")),
            })
    merged.sort(key=lambda record: -record["time"])
    return merged[:limit]


def _close_all(brokers: list[Broker]) -> None:
    """Close each broker's connections; a reader wrote nothing, so a failure
    to close loses nothing."""
    for broker in brokers:
        try:
            broker.close()
        except Exception:  # noqa: BLE001 - best effort, see above
            pass

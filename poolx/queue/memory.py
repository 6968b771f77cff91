"""``memory://`` — the embedded, in-process task queue and result store.

Owned here: :class:`TaskQueue` and the table of live stores.

A URL names a store: ``memory://`` is the default one, ``memory://other``
another.  Every :func:`~poolx.get_broker` / :func:`~poolx.get_queue` call
with the same URL and queue name in one process shares one
:class:`TaskQueue` — that is what lets a producer and a worker pool find each
other, as they would through a Redis server.  Stores are held strongly (a
task enqueued by a producer that then dropped every reference still runs);
the table of stores is the only module-level state.

One lock per queue guards all of its state; operations are atomic under it.
Waiting never polls: :meth:`TaskQueue.get` waits on a condition signalled
when a task is queued, :meth:`TaskQueue.pop_result` on a per-task condition
signalled when the result is stored or discarded.

Scheduled tasks (``delay``/``eta``, retries in back-off) wait in a heap
ordered by due time (on the monotonic clock).  Whoever holds the lock moves
the due ones to the ready queue (:meth:`TaskQueue._promote`, at every
``get``), and a blocked ``get`` waits no longer than until the earliest due
time — a timer, not a polling loop; scheduling a task due earlier than every
other wakes the blocked ``get`` calls so they wait for it instead.  An entry
whose task was discarded meanwhile is skipped when it comes up (so a later
cancel only has to drop the record).

Cancelling (:meth:`TaskQueue.cancel_task`) completes the record with the
cancelled token under the lock, so a cancel and the task's own result never
both win; a task cancelled while processing is remembered until the
consumer running it asks (:meth:`TaskQueue.cancelled_tasks`, which waits on
a condition signalled by every such cancel) or its late result arrives.

Records are plain data keyed by task id — unlike WorQ's memory queue, nothing
depends on the caller keeping its Deferred alive.  A completed result is kept
until it is read or its ``result_timeout`` passes (expired results are swept
on the next operation), so memory stays bounded without garbage collection.
Workers live in this process, so a running task cannot vanish unnoticed:
heartbeats (:meth:`TaskQueue.set_task_timeout`) are accepted and ignored.

The registry of live worker pools (``poolx status``) is per store, shared by
every queue name of that store, and expires entries lazily when read.

Periodic entries live with their queue, under its lock: a claim compares the
entry's version and next run, enqueues and advances in one locked step.
Schedulers waiting for changes wait on one condition of that lock.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from poolx.checks import check_seconds
from poolx.const import (
    COMPLETED,
    DEFAULT,
    ENQUEUED,
    PENDING,
    PROCESSING,
    SCHEDULED,
    TASK_EXPIRED,
)
from poolx.queue.base import AbstractTaskQueue, PeriodicEntry, QueuedTask

if TYPE_CHECKING:
    from poolx.task import Deferred

__all__ = ["TaskQueue"]

_WAITING = (PENDING, ENQUEUED)
_NOT_STARTED = (PENDING, SCHEDULED, ENQUEUED)


@dataclass(eq=False)
class _Record:
    """Everything the queue knows about one task."""

    status: str
    message: bytes | None
    ignore_result: bool
    name: str | None = None
    enqueued_at: float | None = None
    needed: frozenset[str] = frozenset()
    args: dict[str, Any] = field(default_factory=dict)
    dependents: list[str] = field(default_factory=list)
    result: Any = None
    done: threading.Condition | None = None
    due: float | None = None  # monotonic time it may run from (delayed tasks)


def _location(url: str) -> str:
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ValueError(f"memory:// URLs take no options: {url!r}")
    return (parts.netloc + parts.path).strip("/")


class TaskQueue(AbstractTaskQueue):
    """In-memory task queue: thread-safe, shared per URL and queue name."""

    _stores: dict[str, dict[str, TaskQueue]] = {}
    _stores_lock = threading.Lock()
    # store location -> pool id -> (expiry on the monotonic clock, info)
    _pools: dict[str, dict[str, tuple[float, str]]] = {}

    @classmethod
    def factory(cls, url: str, name: str = DEFAULT, *args: Any, **kw: Any) -> TaskQueue:
        """The shared queue for ``url`` and ``name`` (created on first use)."""
        if args or kw:
            raise ValueError(f"memory:// queues take no options, got {args!r} {kw!r}")
        location = _location(url)
        with cls._stores_lock:
            queues = cls._stores.setdefault(location, {})
            queue = queues.get(name)
            if queue is None:
                queue = queues[name] = cls(url, name)
            return queue

    def __init__(self, url: str, name: str = DEFAULT) -> None:
        super().__init__(url, name)
        self._location = _location(url)
        self._lock = threading.Lock()
        self._task_ready = threading.Condition(self._lock)
        self._records: dict[str, _Record] = {}
        self._ready: deque[str] = deque()
        self._taken_args: dict[str, dict[str, Any]] = {}
        self._waiting = 0
        self._expiry: list[tuple[float, int, str, _Record]] = []
        self._scheduled: list[tuple[float, int, str, _Record]] = []  # due-time heap
        self._n_scheduled = 0
        self._seq = itertools.count()
        # Tasks cancelled while processing, until their consumer hears of it.
        self._cancelled_running: set[str] = set()
        self._cancels = 0  # cancels of processing tasks so far
        self._cancel_heard = threading.Condition(self._lock)
        # Periodic entries by name, and the schedulers to wake on a change.
        self._periodic: dict[str, PeriodicEntry] = {}
        self._periodic_changed = threading.Condition(self._lock)
        self._woken: dict[str, bool] = {}

    # -- helpers (call with the lock held) ------------------------------------

    def _set_status(self, rec: _Record, status: str) -> None:
        self._waiting += (status in _WAITING) - (rec.status in _WAITING)
        self._n_scheduled += (status == SCHEDULED) - (rec.status == SCHEDULED)
        rec.status = status

    def _schedule(self, task_id: str, rec: _Record, due: float) -> None:
        """Keep the task until ``due``; wake blocked getters if it is due
        before every other scheduled task (they wait for the earliest)."""
        rec.due = due
        self._set_status(rec, SCHEDULED)
        heap = self._scheduled
        earliest = not heap or due < heap[0][0]
        heapq.heappush(heap, (due, next(self._seq), task_id, rec))
        if earliest:
            self._task_ready.notify_all()

    def _make_ready(self, task_id: str, rec: _Record) -> None:
        """A task that may run once due: queue it now, or schedule it."""
        if rec.due is not None and rec.due > time.monotonic():
            self._schedule(task_id, rec, rec.due)
        else:
            self._enqueue(task_id, rec)

    def _promote(self) -> float | None:
        """Queue the scheduled tasks that are due; return the earliest due
        time left (None if none)."""
        heap = self._scheduled
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            _, _, task_id, rec = heapq.heappop(heap)
            if rec.status == SCHEDULED and self._records.get(task_id) is rec:
                self._enqueue(task_id, rec)
        return heap[0][0] if heap else None

    def _enqueue(self, task_id: str, rec: _Record) -> None:
        self._set_status(rec, ENQUEUED)
        self._ready.append(task_id)
        self._task_ready.notify()

    def _finish(self, rec: _Record, result: Any) -> None:
        """Set the outcome waiters will see and wake them."""
        rec.result = result
        rec.message = None
        if rec.done is not None:
            rec.done.notify_all()

    def _deliver(self, task_id: str, rec: _Record, message: Any) -> list[str]:
        """Hand ``message`` to every task that reserved this result."""
        ready = []
        for dep_id in rec.dependents:
            dep = self._records.get(dep_id)
            if dep is None or dep.status != PENDING or task_id in dep.args:
                continue
            dep.args[task_id] = message
            if dep.needed <= dep.args.keys():
                self._make_ready(dep_id, dep)
                ready.append(dep_id)
        rec.dependents = []
        return ready

    def _remove(self, task_id: str) -> _Record | None:
        rec = self._records.pop(task_id, None)
        if rec is not None:
            self._set_status(rec, COMPLETED)
        return rec

    def _sweep(self) -> None:
        """Forget completed results whose result_timeout has passed."""
        now = time.monotonic()
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            _, _, task_id, rec = heapq.heappop(expiry)
            if self._records.get(task_id) is rec:
                del self._records[task_id]

    def _create(self, result: Deferred, message: bytes, status: str, needed=()) -> _Record | None:
        self._sweep()
        if result.id in self._records:
            return None
        rec = _Record(
            status="new",
            message=message,
            ignore_result=bool(result.task.ignore_result),
            name=result.task.name,
            enqueued_at=time.time(),
            needed=frozenset(needed),
        )
        self._records[result.id] = rec
        self._set_status(rec, status)
        return rec

    # -- AbstractTaskQueue ----------------------------------------------------

    def enqueue_task(self, result: Deferred, message: bytes) -> bool:
        with self._lock:
            rec = self._create(result, message, PENDING)
            if rec is None:
                return False
            self._enqueue(result.id, rec)
            return True

    def defer_task(self, result: Deferred, message: bytes, args: list[str]) -> bool:
        with self._lock:
            rec = self._create(result, message, PENDING, args)
            if rec is None:
                return False
            if not rec.needed:
                self._enqueue(result.id, rec)
            return True

    def schedule_task(self, result: Deferred, message: bytes, delay: float,
                      args: list[str] | None = None) -> bool:
        check_seconds("delay", delay, allow_none=False, allow_zero=True)
        with self._lock:
            rec = self._create(result, message, PENDING, args or ())
            if rec is None:
                return False
            rec.due = time.monotonic() + delay
            if not rec.needed:
                self._make_ready(result.id, rec)
            return True

    def undefer_task(self, task_id: str) -> None:
        with self._lock:
            rec = self._records.get(task_id)
            if rec is not None and rec.status == PENDING:
                self._make_ready(task_id, rec)

    def reserve_argument(self, argument_id: str, deferred_id: str) -> tuple[bool, Any]:
        with self._lock:
            self._sweep()
            rec = self._records.get(argument_id)
            if rec is None:
                return (False, None)
            if rec.result is not None:
                return (True, rec.result)
            rec.dependents.append(deferred_id)
            return (True, None)

    def set_argument(self, task_id: str, argument_id: str, message: Any) -> bool:
        with self._lock:
            rec = self._records.get(task_id)
            if rec is None or rec.status != PENDING or argument_id in rec.args:
                return False
            rec.args[argument_id] = message
            return rec.needed <= rec.args.keys()

    def get_arguments(self, task_id: str) -> dict[str, Any]:
        with self._lock:
            taken = self._taken_args.pop(task_id, None)
            if taken is not None:
                return taken
            rec = self._records.get(task_id)
            return {} if rec is None else dict(rec.args)

    def get(self, timeout: float | None = None) -> tuple[str, bytes] | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                next_due = self._promote()
                while self._ready:
                    task_id = self._ready.popleft()
                    rec = self._records.get(task_id)
                    if rec is None or rec.status != ENQUEUED:
                        continue  # discarded while queued
                    self._set_status(rec, PROCESSING)
                    message = rec.message
                    if rec.ignore_result:
                        # Nobody waits for it: free the id for re-use now.
                        del self._records[task_id]
                        if rec.args:
                            self._taken_args[task_id] = rec.args
                    return task_id, message
                wait = None if next_due is None else max(0.0, next_due - time.monotonic())
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    wait = remaining if wait is None else min(wait, remaining)
                self._task_ready.wait(wait)

    def size(self) -> int:
        with self._lock:
            return self._waiting

    def scheduled_size(self) -> int:
        with self._lock:
            self._promote()
            return self._n_scheduled

    def queued_tasks(self, limit: int) -> list[QueuedTask]:
        listed: dict[str, QueuedTask] = {}
        with self._lock:
            for task_id in self._ready:
                if len(listed) >= limit:
                    break
                rec = self._records.get(task_id)
                if rec is not None and rec.status == ENQUEUED and task_id not in listed:
                    listed[task_id] = QueuedTask(task_id, rec.name, rec.enqueued_at)
        return list(listed.values())

    def discard_pending(self) -> None:
        with self._lock:
            for task_id, rec in list(self._records.items()):
                if rec.status in _NOT_STARTED:
                    self._remove(task_id)
                    self._finish(rec, TASK_EXPIRED)
            self._ready.clear()
            self._scheduled.clear()

    def set_task_timeout(self, task_id: str, timeout: float) -> None:
        check_seconds("task timeout", timeout, allow_none=False)

    def get_status(self, task_id: str) -> str | None:
        with self._lock:
            self._sweep()
            self._promote()
            rec = self._records.get(task_id)
            return None if rec is None else rec.status

    def set_result(self, task_id: str, message: bytes, timeout: float) -> list[str]:
        with self._lock:
            if self._cancelled_running:
                self._cancelled_running.discard(task_id)  # a late result: the task ended
            self._sweep()
            rec = self._records.get(task_id)
            if rec is None or rec.status == COMPLETED:
                return []
            self._set_status(rec, COMPLETED)
            rec.args = {}
            self._finish(rec, message)
            deadline = time.monotonic() + timeout
            heapq.heappush(self._expiry, (deadline, next(self._seq), task_id, rec))
            return self._deliver(task_id, rec, message)

    def pop_result(self, task_id: str, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._sweep()
            rec = self._records.get(task_id)
            if rec is None:
                return TASK_EXPIRED
            while rec.result is None:
                if rec.done is None:
                    rec.done = threading.Condition(self._lock)
                if deadline is None:
                    rec.done.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    rec.done.wait(remaining)
            if self._records.get(task_id) is rec:
                del self._records[task_id]
            return rec.result

    def discard_result(self, task_id: str, task_expired_token: bytes) -> None:
        with self._lock:
            rec = self._remove(task_id)
            if rec is None:
                return
            self._finish(rec, task_expired_token)
            self._deliver(task_id, rec, task_expired_token)

    def cancel_task(self, task_id: str, token: bytes, timeout: float) -> bool:
        check_seconds("timeout", timeout, allow_none=False)
        with self._lock:
            self._sweep()
            rec = self._records.get(task_id)
            if rec is None or rec.status == COMPLETED:
                return False
            if rec.status == PROCESSING:
                self._cancelled_running.add(task_id)
                self._cancels += 1
                self._cancel_heard.notify_all()
            # Queued or scheduled entries are skipped when they come up.
            self._set_status(rec, COMPLETED)
            rec.args = {}
            self._finish(rec, token)
            if rec.ignore_result:  # nobody reads its outcome: free the id now
                del self._records[task_id]
            else:
                heapq.heappush(self._expiry, (time.monotonic() + timeout, next(self._seq),
                                              task_id, rec))
            self._deliver(task_id, rec, token)
            return True

    def cancelled_tasks(self, task_ids: list[str], timeout: float | None) -> list[str]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            seen = self._cancels
            while True:
                found = [task_id for task_id in task_ids if task_id in self._cancelled_running]
                if found:
                    self._cancelled_running.difference_update(found)
                    return found
                if self._cancels != seen:
                    return []  # another task's: the caller asks again with its ids
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                self._cancel_heard.wait(remaining)

    def _taken(self, task_id: str, message: bytes, ignore_result: bool) -> _Record | None:
        """The record of a taken task given back (re-created for an
        ignore_result task), with ``message``; None if not processing."""
        self._cancelled_running.discard(task_id)  # that delivery ended: nothing to stop
        rec = self._records.get(task_id)
        if rec is None:
            if not ignore_result:
                return None
            # Its record left when it was taken: name and age unknown.
            rec = self._records[task_id] = _Record(
                status=PROCESSING, message=message, ignore_result=True
            )
            self._taken_args.pop(task_id, None)
        elif rec.status != PROCESSING:
            return None
        rec.message = message
        return rec

    def requeue_task(self, task_id: str, message: bytes, ignore_result: bool = False) -> bool:
        with self._lock:
            rec = self._taken(task_id, message, ignore_result)
            if rec is None:
                return False
            self._set_status(rec, ENQUEUED)
            self._ready.appendleft(task_id)
            self._task_ready.notify()
            return True

    def retry_task(self, task_id: str, message: bytes, delay: float,
                   ignore_result: bool = False) -> bool:
        check_seconds("delay", delay, allow_none=False, allow_zero=True)
        with self._lock:
            rec = self._taken(task_id, message, ignore_result)
            if rec is None:
                return False
            rec.args = {}  # resolved into the message
            rec.needed = frozenset()
            self._schedule(task_id, rec, time.monotonic() + delay)
            return True

    # -- periodic tasks ---------------------------------------------------------

    def _wake_schedulers(self) -> None:
        for scheduler in self._woken:
            self._woken[scheduler] = True
        self._periodic_changed.notify_all()

    def set_periodic(self, name: str, task: str, schedule: str, spec: bytes,
                     next_run: float) -> bool:
        with self._lock:
            old = self._periodic.get(name)
            if old is not None and old.schedule == schedule:
                next_run = old.next_run
            self._periodic[name] = PeriodicEntry(name, task, schedule, float(next_run),
                                                 os.urandom(8).hex(), spec)
            self._wake_schedulers()
            return old is not None

    def remove_periodic(self, name: str) -> bool:
        with self._lock:
            existed = self._periodic.pop(name, None) is not None
            self._wake_schedulers()
            return existed

    def periodic_entries(self, scheduler: str = "") -> tuple[float, list[PeriodicEntry]]:
        with self._lock:
            if scheduler:
                self._woken[scheduler] = False
            entries = sorted(self._periodic.values(), key=lambda entry: entry.next_run)
            return time.time(), entries

    def claim_periodic(self, entry: PeriodicEntry, next_run: float, result: Deferred,
                       message: bytes) -> bool:
        with self._lock:
            stored = self._periodic.get(entry.name)
            if stored is None or stored.version != entry.version \
                    or stored.next_run != entry.next_run or time.time() < entry.next_run:
                return False
            rec = self._create(result, message, PENDING)
            if rec is not None:
                self._enqueue(result.id, rec)
            self._periodic[entry.name] = stored._replace(next_run=float(next_run))
            return True

    def wait_periodic(self, scheduler: str, timeout: float) -> None:
        with self._lock:
            self._periodic_changed.wait_for(lambda: self._woken.get(scheduler, True),
                                            max(0.0, timeout))

    def wake_periodic(self, scheduler: str) -> None:
        with self._lock:
            self._woken[scheduler] = True
            self._periodic_changed.notify_all()

    # -- the registry of live worker pools ------------------------------------

    def register_pool(self, pool_id: str, info: str, ttl: float) -> None:
        check_seconds("pool ttl", ttl, allow_none=False)
        with self._stores_lock:
            pools = self._pools.setdefault(self._location, {})
            pools[pool_id] = (time.monotonic() + ttl, info)

    def unregister_pool(self, pool_id: str) -> None:
        with self._stores_lock:
            self._pools.get(self._location, {}).pop(pool_id, None)

    def live_pools(self) -> list[str]:
        now = time.monotonic()
        with self._stores_lock:
            pools = self._pools.get(self._location, {})
            for pool_id in [key for key, (expiry, _) in pools.items() if expiry <= now]:
                del pools[pool_id]
            return [info for _, info in pools.values()]

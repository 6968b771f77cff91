"""The storage contract every task-queue backend implements.

Owned here: :class:`AbstractTaskQueue` (re-exported as
``poolx.core.AbstractTaskQueue``, WorQ's path).  A backend stores *bytes*
that the :class:`~poolx.core.Broker` produced; it never unpickles anything,
so serialization (pickle, JSON, HMAC signing) is entirely the broker's.

Who calls what::

    producer ── Broker.enqueue ──▶ enqueue_task                  (no Deferred args)
                                 ▶ defer_task, reserve_argument,
                                   set_argument, undefer_task    (Deferred args)
    worker ──── Broker.next_task ─▶ get, get_arguments
                Broker.heartbeat ─▶ set_task_timeout
                Broker.set_result ▶ store_result (= set_result by default; also
                                    feeds dependent tasks)
                Broker.task_failed ▶ discard_result
    producer ── Broker.enqueue ──▶ schedule_task                 (delay / eta)
    worker ──── Broker.set_result ▶ retry_task    (a retryable failure: run again later)
    consumer ── (stop, taken task never started) ▶ requeue_task
    pools ───── register_pool / unregister_pool  (heartbeat of a worker pool)
    operator ── live_pools, queued_tasks,
                scheduled_size               (``poolx status``)
    waiter ──── Deferred.wait ───▶ pop_result   (blocks inside the backend)
                Deferred.status ─▶ get_status
    anyone ──── Broker.cancel ───▶ cancel_task  (Deferred.cancel, ``poolx cancel``)
    consumer ── (its running tasks) ▶ cancelled_tasks  (terminate the cancelled ones)

Task life cycle (status values from :mod:`poolx.const`)::

    schedule_task ─▶ scheduled ──(due)──────────┐
    defer_task ─▶ pending ──(last argument set)──▶ enqueued ◀── enqueue_task
                  (not due yet: scheduled)           │ get          ▲
                                                     ▼              │ (due)
                                                 processing ── retry_task ──▶ scheduled
                                                     │
                                                     └─────────── set_result ──▶ completed
                                                     │                          │ pop_result
                                 discard_result / lost worker                   ▼
                                                     └────────▶ expired      (removed)

    cancel_task: pending, scheduled, enqueued or processing ──▶ completed
                 (the outcome: the cancelled token)

Rules every implementation keeps (the shared test-suite in
``tests/taskqueue`` checks them against each backend URL):

* **Atomic per method.**  Each method is one indivisible step (a lock in
  memory, one Lua script in Redis): no caller ever sees half an operation.
  In particular ``set_result`` stores the result *and* hands it to every
  dependent task that reserved it, enqueueing those whose arguments are now
  complete — so a worker that dies right after cannot strand them.
* **Blocking, not polling.**  ``get`` and ``pop_result`` block inside the
  backend until something arrives or the timeout passes (a condition variable
  in memory; ``BLMOVE``/``BLPOP`` in Redis).  ``timeout=None`` waits forever,
  ``0`` does not wait.
* **Nothing is lost silently.**  A task id is unique while its record exists
  (``enqueue_task``/``defer_task`` return False for a duplicate).  A result
  that can no longer arrive is reported as :data:`poolx.const.TASK_EXPIRED`
  to waiters and to dependent tasks, never as an endless wait.
* **Thread-safe.**  Every method may be called from any thread.

Optional extensions, with defaults here that any backend gets for free (so
a third-party backend needs only the methods above):

* :meth:`~AbstractTaskQueue.task_done` — a taken ``ignore_result`` task has
  finished (a backend with leases drops the lease; default: nothing).
* :meth:`~AbstractTaskQueue.store_result` — :meth:`set_result` that may
  complete after it returns, so a backend can commit the results of many
  workers in one round trip (default: ``set_result``).
* :meth:`~AbstractTaskQueue.batch` — buffer ``enqueue_task`` calls and send
  them together (default: no buffering).
* :meth:`~AbstractTaskQueue.get_many` and :meth:`~AbstractTaskQueue.pop_results`
  — several tasks or results per call (default: loops over ``get`` and
  ``pop_result``).
* :meth:`~AbstractTaskQueue.schedule_task`, :meth:`~AbstractTaskQueue.retry_task`
  and :meth:`~AbstractTaskQueue.scheduled_size` — delayed tasks and retries
  (default: raise NotImplementedError; the broker then refuses tasks with a
  ``delay``, ``eta`` or ``retry`` option, saying so).  A backend that
  schedules wakes its blocked :meth:`get` callers when a task becomes due
  (a timer, not a polling loop), and keeps scheduled tasks like any other
  stored task.
* :meth:`~AbstractTaskQueue.cancel_task` and
  :meth:`~AbstractTaskQueue.cancelled_tasks` — cancelling tasks (default:
  raise NotImplementedError; :meth:`Broker.cancel
  <poolx.core.Broker.cancel>` then says the backend cannot cancel).
* :meth:`~AbstractTaskQueue.queued_tasks` — the next tasks to run, for
  ``poolx status`` (default: raises NotImplementedError; the command then
  shows the queue sizes only).
* :meth:`~AbstractTaskQueue.set_periodic`, :meth:`~AbstractTaskQueue.remove_periodic`,
  :meth:`~AbstractTaskQueue.periodic_entries`, :meth:`~AbstractTaskQueue.claim_periodic`,
  :meth:`~AbstractTaskQueue.wait_periodic` and :meth:`~AbstractTaskQueue.wake_periodic`
  — the stored entries of periodic tasks and the atomic claim of each tick
  (default: raise NotImplementedError; ``broker.periodic`` then says so).
* ``get`` may return a :class:`Delivery` — a ``(task_id, message)`` tuple
  that also says which delivery this is and, for a task that was lost too
  often, why it must fail instead of running.

A backend may set the attribute ``serializer`` to a
:class:`~poolx.serialization.Serializer` that brokers built on it should use
by default (``None`` means pickle).
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from poolx.const import DEFAULT
from poolx.queue.urls import redact_url

if TYPE_CHECKING:
    from poolx.serialization import Serializer
    from poolx.task import Deferred

__all__ = ["AbstractTaskQueue", "Delivery", "QueuedTask", "PeriodicEntry"]


class QueuedTask(NamedTuple):
    """One entry of :meth:`AbstractTaskQueue.queued_tasks`.

    :param task_id: The task's id.
    :param name: The task's dotted name (None if the backend does not know it).
    :param enqueued_at: When it was enqueued — for a task with Deferred
        arguments, when it was submitted — in seconds since the epoch on
        *this* machine's clock (None if unknown).
    """

    task_id: str
    name: str | None
    enqueued_at: float | None


class PeriodicEntry(NamedTuple):
    """One stored periodic task (:meth:`AbstractTaskQueue.periodic_entries`).

    :param name: The entry's name (unique per queue).
    :param task: The dotted name of the task it enqueues.
    :param schedule: The schedule as the broker wrote it (``"every 60"``,
        ``"cron */5 * * * *"``); the backend only compares it.
    :param next_run: When the next tick is due, in seconds since the epoch
        by the backend's clock.
    :param version: Changes whenever the entry is registered again, so a
        claim made from an older reading fails.
    :param spec: The broker's serialized arguments and options.
    """

    name: str
    task: str
    schedule: str
    next_run: float
    version: str
    spec: bytes


class Delivery(tuple):
    """What :meth:`AbstractTaskQueue.get` returns: ``(task_id, message)``.

    It compares and unpacks as that plain 2-tuple; backends that track
    deliveries (``redis://``) add facts as attributes:

    :ivar attempt: 1 for the first delivery, 2 for the first redelivery...
    :ivar failure: None, or why the task must fail without running (for
        example: its consumer was lost more often than the task's
        ``max_retries`` allows).  :meth:`Broker.next_task
        <poolx.core.Broker.next_task>` records it as the task's
        :class:`~poolx.task.TaskFailure`.
    """

    attempt: int
    failure: str | None

    def __new__(
        cls, task_id: str, message: bytes, attempt: int = 1, failure: str | None = None
    ) -> Delivery:
        self = super().__new__(cls, (task_id, message))
        self.attempt = attempt
        self.failure = failure
        return self

    def __getnewargs__(self) -> tuple:
        return (self[0], self[1], self.attempt, self.failure)


class AbstractTaskQueue:
    """Task queue and result store: the interface a backend implements.

    :param url: The URL that identifies the backend (``memory://``,
        ``redis://host:6379/0``...).
    :param name: The queue name; queues of different names on one backend are
        independent.
    """

    serializer: Serializer | None = None

    def __init__(self, url: str, name: str = DEFAULT) -> None:
        self.url = url
        self.name = name

    def enqueue_task(self, result: Deferred, message: bytes) -> bool:
        """Store a task record (status ``enqueued``) and queue the task.

        :param result: The task's :class:`~poolx.task.Deferred`.  Backends
            read ``result.id`` and ``result.task.ignore_result`` (a task
            whose result is ignored leaves the store when :meth:`get` takes
            it, so its id may be enqueued again).
        :param message: The serialized task.
        :returns: True if enqueued; False if a task with this id exists.
        """
        raise NotImplementedError("abstract method")

    def defer_task(self, result: Deferred, message: bytes, args: list[str]) -> bool:
        """Store a task (status ``pending``) that runs once its arguments arrive.

        The task is queued by :meth:`undefer_task` or, when the last
        argument arrives through :meth:`set_result`, by the backend itself.

        :param result: As for :meth:`enqueue_task`.
        :param message: The serialized task.
        :param args: The ids of the tasks whose results are its arguments.
        :returns: True if stored; False if a task with this id exists.
        """
        raise NotImplementedError("abstract method")

    def undefer_task(self, task_id: str) -> None:
        """Queue a deferred task whose arguments are all set.

        Does nothing if the task is gone or no longer ``pending``.
        """
        raise NotImplementedError("abstract method")

    def reserve_argument(self, argument_id: str, deferred_id: str) -> tuple[bool, Any]:
        """Reserve a task's result as an argument of a deferred task.

        Atomically: if the result is already stored, return it (the caller
        passes it to :meth:`set_argument`); otherwise register
        ``deferred_id`` so that :meth:`set_result` (or
        :meth:`discard_result`) delivers it later.  A result may be reserved
        by any number of deferred tasks.

        :returns: ``(reserved, message)``: ``(True, bytes)`` if the result is
            available, ``(True, None)`` if it will be delivered, and
            ``(False, None)`` if the task is unknown (never existed, expired,
            or its result was already read).
        """
        raise NotImplementedError("abstract method")

    def set_argument(self, task_id: str, argument_id: str, message: Any) -> bool:
        """Store one argument value for a deferred task.

        :param message: The serialized value (or
            :data:`~poolx.const.TASK_EXPIRED`).
        :returns: True exactly once: for the call that set the task's last
            missing argument (the caller then calls :meth:`undefer_task`).
            False otherwise, including when the task is gone or this
            argument was already set.
        """
        raise NotImplementedError("abstract method")

    def get_arguments(self, task_id: str) -> dict[str, Any]:
        """The deferred arguments of a task a worker has taken.

        :returns: Serialized values (or :data:`~poolx.const.TASK_EXPIRED`)
            keyed by argument task id; an argument missing from the dict is
            treated as expired.
        """
        raise NotImplementedError("abstract method")

    def get(self, timeout: float | None = None) -> tuple[str, bytes] | None:
        """Take the next queued task, blocking up to ``timeout`` seconds.

        Atomically removes the task from the queue and sets its status to
        ``processing``.  The worker must keep its heartbeat
        (:meth:`set_task_timeout`) if the backend can expire it.

        :returns: ``(task_id, message)``, or None if the timeout passed.
        """
        raise NotImplementedError("abstract method")

    def size(self) -> int:
        """The approximate number of tasks waiting to run (pending or enqueued)."""
        raise NotImplementedError("abstract method")

    @property
    def reconnects(self) -> int | None:
        """How many operations succeeded after the backend's server had been
        unreachable (a count that only grows), or None for a backend without
        a server (``memory://``).  ``poolx.metrics`` exports it."""
        return None

    def discard_pending(self) -> None:
        """Drop every task waiting to run (pending, scheduled or enqueued).

        Their waiters and dependents receive
        :data:`~poolx.const.TASK_EXPIRED`; running tasks are not affected.
        """
        raise NotImplementedError("abstract method")

    def set_task_timeout(self, task_id: str, timeout: float) -> None:
        """A running task's heartbeat: it counts as lost if ``timeout``
        seconds pass without another one.

        Backends whose workers cannot vanish unnoticed (``memory://``: the
        workers live in the same process) may ignore it.
        """
        raise NotImplementedError("abstract method")

    def get_status(self, task_id: str) -> str | None:
        """A status value from :mod:`poolx.const`, or None for an unknown task."""
        raise NotImplementedError("abstract method")

    def set_result(self, task_id: str, message: bytes, timeout: float) -> list[str]:
        """Store a task's result (status ``completed``) and feed dependents.

        In the same atomic step: wake every :meth:`pop_result` waiter, set
        the result as an argument of each task that reserved it, and queue
        those whose arguments are now complete.  A result for an unknown or
        already completed task is dropped.

        :param timeout: Seconds to keep the result before discarding it.
        :returns: The ids of the dependent tasks this call queued.
        """
        raise NotImplementedError("abstract method")

    def pop_result(self, task_id: str, timeout: float | None) -> Any:
        """Wait up to ``timeout`` seconds for a result and remove it.

        Blocks inside the backend (no polling).  If several callers wait on
        one task at once, at least one receives the result; a backend may
        hand it to all of them (``memory://`` does).

        :returns: The result message; :data:`~poolx.const.TASK_EXPIRED` if
            the task is unknown or its result can no longer arrive; None if
            the timeout passed first.
        """
        raise NotImplementedError("abstract method")

    def share_result(self, task_id: str) -> bool:
        """A copy of the Deferred for ``task_id`` leaves this process (it is
        pickled): stop reading its result ahead (a backend that prefetches
        results, such as ``redis://``, must leave it for the copy's reader).

        :returns: True if the result was already read ahead: the caller
            should take it now with :meth:`pop_result` (it costs nothing).
            This default (no prefetch) returns False.
        """
        return False

    def discard_result(self, task_id: str, task_expired_token: bytes) -> None:
        """Give up on a task: its result will never arrive.

        Waiters receive ``task_expired_token`` (the broker's serialized
        :data:`~poolx.const.TASK_EXPIRED`), dependent tasks receive it as the
        argument value, and the record is removed; a later
        :meth:`set_result` for it is dropped.
        """
        raise NotImplementedError("abstract method")

    def requeue_task(self, task_id: str, message: bytes, ignore_result: bool = False) -> bool:
        """Give back a task that :meth:`get` handed out and that never ran.

        A consumer that stops (or whose pool broke) before it could start a
        task it had taken calls this, so the task is not lost: it goes back
        to the *front* of the queue with status ``enqueued``, as if it had
        never been taken, and its waiters keep waiting.

        :param message: The task's message to store in place of the old one
            (the consumer re-serializes the task: its Deferred arguments are
            already resolved, so it has none left).
        :param ignore_result: The task's ``ignore_result`` option.  Such a
            task left the store when it was taken, so its record is created
            again; for any other task a missing record means it was
            discarded meanwhile and nothing is queued.
        :returns: True if the task was queued again; False if it is no
            longer ``processing`` (completed, discarded or unknown).
        """
        raise NotImplementedError("abstract method")

    # -- the registry of live worker pools (``poolx status``) -----------------

    def register_pool(self, pool_id: str, info: str, ttl: float) -> None:
        """Publish (insert or replace) a worker pool's status.

        Worker pools call this periodically as their heartbeat.  An entry
        that is not registered again within ``ttl`` seconds disappears from
        :meth:`live_pools`, so a pool that died unannounced drops out.

        :param pool_id: Unique id of the pool (host, pid and a random part).
        :param info: The pool's status as a JSON object text.
        :param ttl: Seconds the entry stays visible without a new call.
        """
        raise NotImplementedError("abstract method")

    def unregister_pool(self, pool_id: str) -> None:
        """Remove a pool's entry at once (a pool that stops cleanly)."""
        raise NotImplementedError("abstract method")

    def live_pools(self) -> list[str]:
        """The ``info`` texts of every unexpired pool entry on this server,
        whatever queue name each pool consumes (in no particular order)."""
        raise NotImplementedError("abstract method")

    # -- optional extensions (defaults that any backend can rely on) --------------

    def task_done(self, task_id: str) -> None:
        """A taken task whose result is ignored has finished.

        The broker calls this instead of :meth:`set_result` for
        ``ignore_result`` tasks, so a backend that leases taken tasks
        (``redis://``) can drop the lease instead of redelivering the task.
        Default: nothing.
        """

    def store_result(self, task_id: str, message: bytes, timeout: float) -> None:
        """:meth:`set_result` for a worker that does not need its return value.

        A backend may finish the write after returning (``redis://`` commits
        the results buffered meanwhile in one round trip, group-commit
        style), provided that every later call on *this* queue object sees
        it.  Other processes see it as soon as it is committed, like any
        result arriving over the network.  Default: :meth:`set_result`.
        """
        self.set_result(task_id, message, timeout)

    def batch(self) -> contextlib.AbstractContextManager[Any]:
        """A context in which :meth:`enqueue_task` calls of this thread may be
        buffered and sent together when it exits (or when the buffer fills).

        Inside it ``enqueue_task`` may return True for a task that turns out
        to be a duplicate; the flush then raises
        :class:`~poolx.task.DuplicateTask`.  Default: no buffering.
        """
        return contextlib.nullcontext()

    def get_many(self, count: int, timeout: float | None = None) -> list[tuple[str, bytes]]:
        """Take up to ``count`` queued tasks: block up to ``timeout`` for the
        first, then take what is ready without waiting.

        Default: :meth:`get` in a loop.
        """
        first = self.get(timeout)
        if first is None:
            return []
        items = [first]
        while len(items) < count:
            item = self.get(0)
            if item is None:
                break
            items.append(item)
        return items

    def pop_results(self, task_ids: list[str], timeout: float | None) -> dict[str, Any]:
        """:meth:`pop_result` for several tasks: wait up to ``timeout``
        seconds (in all) until every result arrived.

        :returns: ``{task_id: message or TASK_EXPIRED}`` for the tasks that
            finished in time; the others are missing from the dict.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        found: dict[str, Any] = {}
        for task_id in task_ids:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            message = self.pop_result(task_id, remaining)
            if message is not None:
                found[task_id] = message
        return found

    def schedule_task(self, result: Deferred, message: bytes, delay: float,
                      args: list[str] | None = None) -> bool:
        """Store a task that must not run before ``delay`` seconds from now.

        Without ``args``: status ``scheduled``; when it is due it is queued
        (at the back, like :meth:`enqueue_task`), and a :meth:`get` blocked
        meanwhile wakes for it.  With ``args``, as :meth:`defer_task`
        (``pending``); once its last argument is set it is queued if it is
        due, otherwise ``scheduled`` until then.

        :param delay: Seconds from now (> 0), by the backend's clock.
        :returns: True if stored; False if a task with this id exists.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot schedule tasks")

    def retry_task(self, task_id: str, message: bytes, delay: float,
                   ignore_result: bool = False) -> bool:
        """A task that :meth:`get` handed out failed and runs again later.

        In one step: the task goes from ``processing`` to ``scheduled``
        (due ``delay`` seconds from now, then queued as by
        :meth:`schedule_task`), with ``message`` in place of the old one (the
        broker's copy for the next attempt, its Deferred arguments already
        resolved), and no result is stored: waiters and dependent tasks
        keep waiting.  Its count of deliveries (``max_retries``) starts
        again.

        :param ignore_result: As for :meth:`requeue_task`.
        :returns: True if scheduled; False if the task is no longer
            ``processing`` by this delivery (completed, discarded, unknown).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot retry tasks")

    def scheduled_size(self) -> int:
        """How many tasks are ``scheduled`` (not due yet, or due and not
        queued yet), for ``poolx status``.  They are not counted by
        :meth:`size`; :meth:`discard_pending` drops them too."""
        raise NotImplementedError(f"{type(self).__name__} cannot schedule tasks")

    def cancel_task(self, task_id: str, token: bytes, timeout: float) -> bool:
        """Cancel a task that has not completed, in one atomic step.

        A ``pending``, ``scheduled`` or ``enqueued`` task is removed from
        wherever it waits (it never runs); a ``processing`` one is marked
        for its consumer (:meth:`cancelled_tasks`, which wakes).  Either
        way the task is ``completed`` with ``token`` (the broker's
        serialized :data:`~poolx.const.TASK_CANCELLED`) as its result, as
        :meth:`set_result` would store it: waiters wake, dependent tasks
        receive it as the argument, and a later :meth:`set_result`,
        :meth:`retry_task` or :meth:`requeue_task` for it changes nothing.

        :param timeout: Seconds to keep the outcome.
        :returns: True if cancelled; False if the task is completed, its
            result was read, or it is unknown (an ``ignore_result`` task
            that was taken is unknown).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot cancel tasks")

    def cancelled_tasks(self, task_ids: list[str], timeout: float | None) -> list[str]:
        """The ids among ``task_ids`` (tasks this process took and has not
        answered) that :meth:`cancel_task` cancelled while they were
        ``processing``; each is reported once.

        Blocks inside the backend (no polling) until one of them is
        cancelled or ``timeout`` seconds pass; it may also return ``[]``
        early when another task was cancelled meanwhile (the caller asks
        again with the ids it holds then, so a task taken during the wait
        is not missed).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot cancel tasks")

    def queued_tasks(self, limit: int) -> list[QueuedTask]:
        """The first ``limit`` tasks ready to run, the next one first
        (``poolx status`` lists them).

        Tasks still waiting for Deferred arguments (status ``pending``) are
        not ready and not listed.  ``limit <= 0`` returns ``[]``.  This
        default raises NotImplementedError: the backend cannot list them.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list its queued tasks")

    # -- periodic tasks (optional: default NotImplementedError) ---------------------

    def set_periodic(self, name: str, task: str, schedule: str, spec: bytes,
                     next_run: float) -> bool:
        """Store (insert or replace) the periodic entry ``name`` under a new
        version, and wake every scheduler waiting in :meth:`wait_periodic`.

        :param next_run: The first tick (epoch seconds).  An entry that
            exists with the same ``schedule`` keeps its own next run (a
            program that registers its entries at every start does not push
            them back).
        :returns: True if the entry existed (it was updated).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot store periodic tasks")

    def remove_periodic(self, name: str) -> bool:
        """Delete the periodic entry ``name`` (waking schedulers); True if it existed."""
        raise NotImplementedError(f"{type(self).__name__} cannot store periodic tasks")

    def periodic_entries(self, scheduler: str = "") -> tuple[float, list[PeriodicEntry]]:
        """Every periodic entry, the earliest next run first, and the
        backend's time (epoch seconds) when they were read.

        :param scheduler: The id of a scheduler that will wait in
            :meth:`wait_periodic`: any change after this reading wakes it.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot store periodic tasks")

    def claim_periodic(self, entry: PeriodicEntry, next_run: float, result: Deferred,
                       message: bytes) -> bool:
        """Run one tick, atomically: if ``entry`` is still stored with its
        version and next run, and that time has come by the backend's clock,
        enqueue the task (as :meth:`enqueue_task`) and move the entry's next
        run to ``next_run``.  Of several schedulers claiming one tick, exactly
        one succeeds.

        :returns: True if this call enqueued the tick.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot store periodic tasks")

    def wait_periodic(self, scheduler: str, timeout: float) -> None:
        """Block up to ``timeout`` seconds, or until an entry changes after
        ``scheduler``'s last :meth:`periodic_entries` reading, or
        :meth:`wake_periodic` is called for it (no polling)."""
        raise NotImplementedError(f"{type(self).__name__} cannot store periodic tasks")

    def wake_periodic(self, scheduler: str) -> None:
        """End ``scheduler``'s :meth:`wait_periodic` now (a stopping scheduler)."""
        raise NotImplementedError(f"{type(self).__name__} cannot store periodic tasks")

    def close(self) -> None:
        """Release the backend's resources (connections, threads); what was
        stored stays stored.  Calling it again does nothing.  This default
        (nothing to release, as ``memory://``) does nothing."""

    @property
    def display_url(self) -> str:
        """The URL as shown to people: any password replaced by ``***``."""
        return redact_url(self.url)

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__name__} {self.display_url} [{self.name}]>"

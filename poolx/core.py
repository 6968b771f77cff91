"""The broker: everything between task objects and a storage backend.

Owned here (WorQ's ``worq.core`` under poolx's name):

* :func:`get_broker` / :func:`get_queue` — find the backend for a URL in the
  registry (:mod:`poolx.queue.registry`) and wrap it in a :class:`Broker`.
* :class:`Broker` — the registry of exposed task callables, the one
  :class:`~poolx.serialization.Serializer`, and every call into the backend.
  Producers enqueue through it; workers call :meth:`Broker.next_task`,
  :meth:`Broker.invoke`, :meth:`Broker.heartbeat`; waiters call
  :meth:`Broker.pop_result` and :meth:`Broker.status`; anyone may
  :meth:`Broker.cancel` a task, and consumers learn of their running tasks
  that were cancelled from :meth:`Broker.cancelled_tasks`.
* :class:`AbstractTaskQueue` — re-exported from :mod:`poolx.queue.base`,
  the storage contract.
* :func:`batch` — enqueue many tasks in few round trips.

Security.  With a shared secret (``secret=`` or the ``POOLX_SECRET``
environment variable) the broker wraps its serializer in a
:class:`~poolx.serialization.SignedSerializer`: every message it writes is
HMAC-signed, and every message it reads is verified before it is decoded, so
a message that was not written by a holder of the secret never runs (the
task fails, saying why).  URLs are shown redacted
(:func:`~poolx.queue.urls.redact_url`) in reprs and errors.

Message format.  A task message is the serialized envelope
``{"name", "id", "options", "args", "payload"}`` where ``payload`` is the
separately serialized ``(args, kwargs)`` and ``args`` maps each Deferred
argument's task id to its name.  The envelope holds only plain data, so a
worker can always name the task it failed to load, and fail it clearly,
even when the payload cannot be deserialized.

Layer L5: imports the task objects (L2), serialization (L3) and the backend
package (L4); nothing below imports this module.  On import it registers
:func:`get_broker` as the way a :class:`~poolx.task.Deferred` read from bytes
finds its broker (:func:`poolx.task.set_broker_connector`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from poolx.const import DEFAULT, STATUS_VALUES, TASK_CANCELLED, TASK_EXPIRED
from poolx.periodic import PeriodicEntryError, Schedule
from poolx.queue.base import AbstractTaskQueue, PeriodicEntry
from poolx.queue.registry import registry
from poolx.queue.urls import redact_url
from poolx.serialization import (
    PickleSerializer,
    SerializationError,
    Serializer,
    SignedSerializer,
)
from poolx.task import (
    Deferred,
    DuplicateTask,
    FunctionTask,
    Queue,
    Retry,
    Task,
    TaskCancelled,
    TaskExpired,
    TaskFailure,
    TaskSpace,
    error_text,
    queue_broker,
    set_broker_connector,
)

__all__ = [
    "Broker",
    "AbstractTaskQueue",
    "get_broker",
    "get_queue",
    "register_backend",
    "batch",
    "SECRET_ENV",
]

log = logging.getLogger(__name__)

SECRET_ENV = "POOLX_SECRET"
"""Environment variable holding the shared signing secret."""

CANCELLED_RESULT_TIMEOUT = Task.OPTIONS["result_timeout"]
"""Seconds the outcome of a cancelled task is kept (the default
``result_timeout``): the canceller need not know the task's options."""

UNKNOWN_TASK = "<unknown>"
"""Task name used in a failure when a message is too damaged to name it."""


_ENVELOPE_KEYS = frozenset(["name", "id", "options", "args", "payload"])
_ATOMS = frozenset([int, float, str, bytes, bool, type(None)])
"""Types whose values cannot be or hold a Deferred (exact types: a subclass
may hold anything)."""


class _ForeignDeferred(ValueError):
    pass


class _EnqueuedDeferred(Deferred):
    """The Deferred :meth:`Broker.enqueue` returns: a backend may read its
    result ahead while it lives (``redis://`` result prefetch), so a copy
    that leaves the process (pickled) first takes the result if it was read
    ahead already, or tells the backend to leave it for the copy's reader."""

    def __reduce__(self) -> tuple[Any, ...]:
        broker = self._broker
        if broker is not None and not self.has_value():
            store = getattr(broker, "taskqueue", None)
            if store is not None and store.share_result(self.id):
                self.wait(0)
        return super().__reduce__()


class Broker:
    """Controls all interaction with a task queue backend.

    :param taskqueue: The storage backend.
    :param serializer: How messages are encoded; defaults to the backend's
        ``serializer`` attribute, else pickle.
    :param secret: Sign and verify every message with this shared secret
        (HMAC-SHA256, see :class:`~poolx.serialization.SignedSerializer`).
        ``None`` (the default) reads the ``POOLX_SECRET`` environment
        variable; ``""`` turns signing off whatever the environment says.
    """

    def __init__(
        self,
        taskqueue: AbstractTaskQueue,
        serializer: Serializer | None = None,
        secret: Any = None,
    ) -> None:
        self._taskqueue = taskqueue
        self.tasks: dict[str, Callable[..., Any]] = {}
        self.name: str = taskqueue.name
        chosen = serializer or getattr(taskqueue, "serializer", None) or PickleSerializer()
        if secret is None:
            secret = os.environ.get(SECRET_ENV) or None
        if secret and not isinstance(chosen, SignedSerializer):
            chosen = SignedSerializer(chosen, secret=secret)
        self.serializer: Serializer = chosen
        # What a task with a Retry policy was delivered with (its message's
        # envelope and its Deferred arguments' stored results), so that the
        # next attempt gets the arguments as delivered, not as the attempt
        # left them (a thread pool's attempt runs on the very objects).
        self._delivered: weakref.WeakKeyDictionary[FunctionTask, tuple[dict[str, Any], dict[str, Any]]] = \
            weakref.WeakKeyDictionary()

    @property
    def url(self) -> str:
        return self._taskqueue.url

    @property
    def taskqueue(self) -> AbstractTaskQueue:
        """The storage backend this broker talks to."""
        return self._taskqueue

    def __repr__(self) -> str:
        return f"<Broker {redact_url(self.url)} [{self.name}]>"

    # -- exposing tasks -----------------------------------------------------

    def expose(self, obj: TaskSpace | Callable[..., Any], replace: bool = False) -> None:
        """Expose a :class:`~poolx.task.TaskSpace` or a task callable
        (function, bound method...) to workers using this broker.

        :param replace: Replace an existing task of the same name.  By
            default that raises ``ValueError``.
        """
        if isinstance(obj, TaskSpace):
            space = obj
        else:
            space = TaskSpace()
            space.task(obj)
        if not replace:
            for name in space.tasks:
                if name in self.tasks:
                    raise ValueError(f"task {name!r} conflicts with existing task")
        self.tasks.update(space.tasks)

    def queue(self, target: str = "", **options: Any) -> Queue:
        """A :class:`~poolx.task.Queue` on this broker.

        :param options: Default :class:`~poolx.task.Task` options.
        :raises ValueError: for an unknown option or an invalid value.
        """
        queue = Queue(self, target, **options)
        try:
            Task(queue, **options)
        except TypeError as err:
            raise ValueError(f"invalid task options {options!r}: {err}") from None
        return queue

    # -- producer side ------------------------------------------------------

    def __len__(self) -> int:
        """The approximate number of tasks waiting to run."""
        return self._taskqueue.size()

    def discard_pending_tasks(self) -> None:
        """Discard every task waiting to run; their waiters get TaskExpired."""
        self._taskqueue.discard_pending()

    def close(self) -> None:
        """Close the backend's connections (``redis://``: first committing
        buffered results and giving back tasks fetched but not handed out).
        The broker cannot be used afterwards.  ``with get_broker(url) as
        broker:`` closes it at the end of the block.

        The close lives here, not on the :class:`~poolx.task.Queue`: as in
        WorQ, every attribute of a queue is a task name (``q.close()``
        enqueues a task named ``close``).
        """
        self._taskqueue.close()

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def batch(self) -> contextlib.AbstractContextManager[Any]:
        """A context in which this thread's enqueues are sent in batches.

        Tasks without Deferred arguments are buffered and sent together when
        the block exits or the buffer fills (``redis://`` stores hundreds per
        round trip); a task with Deferred arguments flushes the buffer and is
        enqueued at once.  A duplicate task id is reported by the flush
        (:class:`~poolx.task.DuplicateTask`), not by the call.  On backends
        without batching (``memory://``) this changes nothing.
        """
        return self._taskqueue.batch()

    def enqueue(self, task: FunctionTask) -> Deferred | None:
        """Queue a task; return its :class:`~poolx.task.Deferred`, or None if
        its result is ignored.

        A task with Deferred arguments is stored as ``pending`` and queued
        when the last argument's result arrives.

        :raises SerializationError: if an argument cannot be serialized
            (the message names the task).
        :raises DuplicateTask: if a task with the same id is in the queue.
        :raises TaskFailure: if a Deferred argument's result is no longer
            available.
        :raises ValueError: if a Deferred argument belongs to another queue.
        :raises NotImplementedError: if the task has a ``delay``, ``eta`` or
            ``retry`` option and the backend cannot schedule tasks.

        A task with a positive :attr:`~poolx.task.FunctionTask.delay` is
        stored as ``scheduled`` and queued when due (with Deferred
        arguments: ``pending`` until they arrive, then ``scheduled`` if it
        is not due yet).
        """
        store = self._taskqueue
        if task.retry is not None and not _extends(store, "retry_task"):
            raise NotImplementedError(
                f"task {task.name}: the {type(store).__module__} backend cannot retry tasks"
            )
        delay = task.delay if task.delay is not None and task.delay > 0 else None
        if delay is not None and not _extends(store, "schedule_task"):
            raise NotImplementedError(
                f"task {task.name}: the {type(store).__module__} backend cannot delay tasks"
            )
        message, args = self._task_message(task)
        result = _EnqueuedDeferred(self, task)
        if not args:
            if delay is None:
                made = store.enqueue_task(result, message)
            else:
                made = store.schedule_task(result, message, delay)
            if not made:
                raise DuplicateTask(
                    task.name, self.name, task.id, "cannot enqueue task with duplicate id"
                )
            log.debug("enqueue %s [%s:%s]", task.name, self.name, task.id)
            return None if task.ignore_result else result

        if delay is None:
            made = store.defer_task(result, message, list(args))
        else:
            made = store.schedule_task(result, message, delay, list(args))
        if not made:
            raise DuplicateTask(
                task.name, self.name, task.id, "cannot enqueue task with duplicate id"
            )
        log.debug("defer %s [%s:%s]", task.name, self.name, task.id)
        for arg_id, arg in args.items():
            if arg.has_value():
                msg = self.serialize(arg.received())
            else:
                reserved, msg = store.reserve_argument(arg_id, task.id)
                if not reserved:
                    store.discard_result(task.id, self.serialize(TASK_EXPIRED))
                    raise TaskFailure(
                        task.name,
                        self.name,
                        task.id,
                        f"task [{self.name}:{arg_id}] result is not available",
                    )
            if msg is not None and store.set_argument(task.id, arg_id, msg):
                log.debug("undefer %s [%s:%s]", task.name, self.name, task.id)
                store.undefer_task(task.id)
        return None if task.ignore_result else result

    def _task_message(self, task: FunctionTask) -> tuple[bytes, dict[str, Deferred]]:
        """Serialize ``task``; collect its Deferred arguments by task id."""
        args: dict[str, Deferred] = {}

        def persistent_id(obj: Any) -> str | None:
            if isinstance(obj, Deferred):
                broker = obj.broker
                if broker.url != self.url or broker.name != self.name:
                    raise _ForeignDeferred(
                        f"task {task.name} [{self.name}:{task.id}]: argument {obj!r} "
                        f"belongs to {broker.url} [{broker.name}], not this queue"
                    )
                args[obj.id] = obj
                return obj.id
            return None

        try:
            # Arguments of plain types hold no Deferred: no reference hook.
            plain = all(type(arg) in _ATOMS for arg in task.args) and \
                all(type(arg) in _ATOMS for arg in task.kw.values())
            payload = self.serializer.dumps((task.args, task.kw), None if plain else persistent_id)
            envelope = {
                "name": task.name,
                "id": task.id,
                "options": task.options,
                "args": {arg_id: arg.name for arg_id, arg in args.items()},
                "payload": payload,
            }
            message = self.serializer.dumps(envelope)
        except _ForeignDeferred as err:
            raise ValueError(str(err)) from None
        except Exception as err:
            raise SerializationError(
                f"cannot serialize task {task.name} [{self.name}:{task.id}]: {error_text(err)}"
            ) from err
        return message, args

    # -- worker side --------------------------------------------------------

    def next_task(self, timeout: float | None = None) -> FunctionTask | None:
        """Take the next task from the queue (blocking up to ``timeout``).

        :returns: A task ready to :meth:`invoke`, or None if the timeout
            passed, or if the task could not run: a message that cannot be
            deserialized, or a Deferred argument that failed (with
            ``on_error=Task.FAIL``).  Such a task is already marked failed
            with a :class:`~poolx.task.TaskFailure` saying why.
        """
        item = self._taskqueue.get(timeout=timeout)
        if item is None:
            return None
        return self._take(item)

    def next_tasks(self, count: int, timeout: float | None = None) -> list[FunctionTask]:
        """Take up to ``count`` tasks in as few backend calls as possible:
        block up to ``timeout`` for the first, then take what is ready.

        Tasks that cannot run (see :meth:`next_task`) are marked failed and
        left out, so the list may be shorter than what the backend handed
        over, or empty.
        """
        tasks = []
        for item in self._taskqueue.get_many(count, timeout=timeout):
            task = self._take(item)
            if task is not None:
                tasks.append(task)
        return tasks

    def _take(self, item: tuple[str, bytes]) -> FunctionTask | None:
        task_id, message = item
        name, options = UNKNOWN_TASK, {}
        try:
            envelope = self._load_envelope(message)
            name, options = envelope["name"], envelope["options"]
            failure = getattr(item, "failure", None)
            if failure:
                # The backend says this delivery must not run (its consumer
                # was lost too often): record why, as the task's result.
                failed = TaskFailure(name, self.name, task_id, failure)
                log.error("%s", failed)
                self.set_result(_stub_task(name, task_id, options), failed)
                return None
            task = self._load_task(task_id, envelope)
        except Exception as err:
            failure = TaskFailure(
                name, self.name, task_id, f"cannot deserialize task: {error_text(err)}"
            )
            log.error("%s", failure, exc_info=True)
            self.set_result(_stub_task(name, task_id, options), failure)
            return None
        if task is not None:
            log.debug("next %s [%s:%s]", task.name, self.name, task_id)
        return task

    def invoke(self, task: FunctionTask, **kw: Any) -> Any:
        """Invoke the given task (normally only called by a worker)."""
        return task.invoke(self, **kw)

    def heartbeat(self, task: FunctionTask) -> None:
        """Tell the backend that ``task`` is still running."""
        self._taskqueue.set_task_timeout(task.id, task.lease)

    def set_result(self, task: FunctionTask, result: Any) -> None:
        """Store a task's result (for an ``ignore_result`` task: tell the
        backend it is done).

        A result that cannot be serialized is replaced by a
        :class:`~poolx.task.TaskFailure` saying so.  The backend may commit
        the result after this returns (``store_result``: ``redis://`` writes
        the results of many workers in one round trip); this broker reads it
        back at once all the same.

        Retries: a failure marked :attr:`~poolx.task.TaskFailure.retryable`
        of a task whose :class:`~poolx.task.Retry` policy has retries left is
        not stored: the task is scheduled to run again after the policy's
        back-off (:meth:`~poolx.queue.base.AbstractTaskQueue.retry_task`),
        and its waiters keep waiting.  A final failure of such a task says
        how many attempts ran.
        """
        if isinstance(result, TaskFailure) and task.retry is not None \
                and result.task_id == task.id:
            if self._retried(task, result):
                return
            retryable, result = result.retryable, _final(task, result)
            if retryable:  # the retries are used up (a failure not covered is logged already)
                log.error("task failed: %s", result)
        if task.ignore_result:
            self._taskqueue.task_done(task.id)
            return
        try:
            message = self.serialize(result)
        except Exception as err:
            failure = TaskFailure(
                task.name, self.name, task.id, f"cannot serialize result: {error_text(err)}"
            )
            log.error("%s", failure)
            message = self.serialize(failure)
        self._taskqueue.store_result(task.id, message, task.result_timeout)

    def _retried(self, task: FunctionTask, failure: TaskFailure) -> bool:
        """Schedule the next attempt of a task that failed with a retryable
        ``failure``; False if it must be stored as final instead."""
        retry = task.retry
        assert retry is not None
        if not failure.retryable or task.attempt > retry.max:
            return False
        delay = retry.countdown(task.attempt - 1)
        options = dict(task.options, attempt=task.attempt + 1)
        try:
            delivered = self._delivered.pop(task, None)
            args, kw = (task.args, task.kw) if delivered is None else self._arguments(*delivered)[:2]
            again = FunctionTask(task.name, args, kw, dict(options, id=task.id))
            message, pending = self._task_message(again)
            if pending:
                raise ValueError("its arguments hold Deferred results")
        except Exception as err:
            log.error("cannot retry %s [%s:%s]: %s", task.name, self.name, task.id,
                      error_text(err))
            return False
        if self._taskqueue.retry_task(task.id, message, delay, task.ignore_result):
            log.warning("%s; attempt %d of %d in %.3g s", failure, task.attempt + 1,
                        retry.max + 1, delay)
        else:
            log.info("not retried (no longer processing): %s [%s:%s]", task.name, self.name,
                     task.id)
        return True

    def task_failed(self, task: FunctionTask) -> None:
        """Give up on a task: its waiters get :class:`~poolx.task.TaskExpired`."""
        self._taskqueue.discard_result(task.id, self.serialize(TASK_EXPIRED))

    # -- cancelling -----------------------------------------------------------

    def cancel(self, task_id: str) -> bool:
        """Cancel the task ``task_id`` of this queue, from any process: True
        if it will not complete, False if it had finished (or is unknown).

        In one atomic step on the backend (so exactly one outcome wins when
        a cancel races with the task's completion): a waiting task
        (enqueued, pending, scheduled — a retry's back-off too) is removed,
        a running one is marked so that its consumer terminates its worker
        (:meth:`cancelled_tasks`), and the task's outcome becomes a
        :class:`~poolx.task.TaskCancelled`: its waiters get it at once, its
        dependent tasks get it as their argument (and follow
        ``on_error``), and a result the task still produces is dropped.
        The outcome is kept :data:`CANCELLED_RESULT_TIMEOUT` seconds.

        An ``ignore_result`` task leaves the queue when a worker takes it:
        once running, it is unknown here (False).

        :raises NotImplementedError: if the backend cannot cancel tasks.
        """
        store = self._taskqueue
        if not _extends(store, "cancel_task"):
            raise NotImplementedError(
                f"the {type(store).__module__} backend cannot cancel tasks"
            )
        cancelled = store.cancel_task(task_id, self.serialize(TASK_CANCELLED),
                                      CANCELLED_RESULT_TIMEOUT)
        if cancelled:
            log.info("cancelled [%s:%s]", self.name, task_id)
        return cancelled

    def cancelled_tasks(self, task_ids: list[str], timeout: float | None) -> list[str]:
        """Which of ``task_ids`` — tasks this process took and runs — were
        cancelled meanwhile (each reported once), blocking inside the backend
        up to ``timeout`` seconds until one is.  It may return an empty list
        early (when another task was cancelled): callers ask again, with the
        ids they run then.  See
        :meth:`~poolx.queue.base.AbstractTaskQueue.cancelled_tasks`.

        :raises NotImplementedError: if the backend cannot cancel tasks.
        """
        return self._taskqueue.cancelled_tasks(task_ids, timeout)

    # -- waiter side --------------------------------------------------------

    def status(self, result: Deferred) -> Any:
        """The backend's status for a Deferred's task (None if unknown)."""
        message = self._taskqueue.get_status(result.id)
        if message is None or message in STATUS_VALUES:
            return message
        return self.deserialize(message)

    def pop_results(self, tasks: list[Any], timeout: float | None = 0) -> dict[str, Any]:
        """:meth:`pop_result` for many tasks at once (see
        :func:`~poolx.task.wait_all`).

        :returns: ``{task_id: value}`` for every task whose outcome arrived
            within ``timeout``: the result, a
            :class:`~poolx.task.TaskFailure`, or a
            :class:`~poolx.task.TaskExpired` (returned, not raised).
        """
        if timeout is not None and timeout < 0:
            raise ValueError("negative timeout not supported")
        by_id = {task.id: task for task in tasks}
        values: dict[str, Any] = {}
        for task_id, message in self._taskqueue.pop_results(list(by_id), timeout).items():
            task = by_id[task_id]
            value = self._decode_result(task, message)
            values[task_id] = _expired(task, self.name) if value is TASK_EXPIRED else value
        return values

    def _decode_result(self, task: Any, message: Any) -> Any:
        """A popped message as a value (TASK_EXPIRED stays the marker; the
        TASK_CANCELLED marker becomes the task's TaskCancelled)."""
        if message is TASK_EXPIRED:
            return message
        try:
            value = self.deserialize(message)
            return TaskCancelled(task.name, self.name, task.id) if value is TASK_CANCELLED else value
        except Exception as err:
            log.error("cannot deserialize result of %s [%s:%s]", task.name, self.name, task.id)
            return TaskFailure(
                task.name, self.name, task.id, f"cannot deserialize result: {error_text(err)}"
            )

    def pop_result(self, task: Any, timeout: float | None = 0) -> Any:
        """Wait for a task's result and return it (deserialized).

        :param task: Anything with ``id`` and ``name`` (a Deferred, a task).
        :param timeout: Seconds to wait; 0 (the default) does not wait, None
            waits indefinitely.
        :raises KeyError: if the result is not available yet.
        :raises TaskExpired: if the result will never arrive.
        :returns: The result; a :class:`~poolx.task.TaskFailure` if the task
            failed or its result cannot be deserialized here.
        """
        if timeout is not None and timeout < 0:
            raise ValueError("negative timeout not supported")
        message = self._taskqueue.pop_result(task.id, timeout)
        if message is None:
            raise KeyError(task.id)
        result = self._decode_result(task, message)
        if result is TASK_EXPIRED:
            raise _expired(task, self.name)
        return result

    # -- serialization ------------------------------------------------------

    def serialize(self, obj: Any, deferred: bool = False) -> Any:
        """Serialize an object with this broker's serializer.

        :param deferred: If true, ``obj`` must be a
            :class:`~poolx.task.FunctionTask`; return ``(message, args)``
            where ``args`` maps the id of each Deferred argument to the
            Deferred (the message refers to them by id).  Otherwise return
            the message; a Deferred inside ``obj`` is pickled as a handle
            that reconnects to its broker when loaded.
        """
        if deferred:
            return self._task_message(obj)
        return self.serializer.dumps(obj)

    def deserialize(self, message: bytes, task_id: str | None = None) -> Any:
        """Deserialize a message.

        :param task_id: If given, ``message`` is that task's message: its
            Deferred arguments are replaced by their results.  Returns the
            :class:`~poolx.task.FunctionTask`, or None if an argument failed
            and the task has ``on_error=Task.FAIL`` (the task is then marked
            failed with that argument's :class:`~poolx.task.TaskFailure`).
        """
        if task_id is None:
            return self.serializer.loads(message)
        return self._load_task(task_id, self._load_envelope(message))

    def _load_envelope(self, message: bytes) -> dict[str, Any]:
        envelope = self.serializer.loads(message)
        if not isinstance(envelope, dict) or not _ENVELOPE_KEYS <= envelope.keys():
            raise ValueError(f"not a poolx task message: {type(envelope).__name__}")
        return envelope

    def _load_task(self, task_id: str, envelope: dict[str, Any]) -> FunctionTask | None:
        task = _stub_task(envelope["name"], task_id, envelope["options"])
        stored = self._taskqueue.get_arguments(task_id) if envelope["args"] else {}
        task.args, task.kw, failures = self._arguments(envelope, stored)
        if task.retry is not None:
            self._delivered[task] = (envelope, stored)
        if failures and not task.on_error_pass:
            log.debug("%s failed: argument %s", task, failures[0])
            self.set_result(task, failures[0])
            return None
        return task

    def _arguments(self, envelope: dict[str, Any],
                   stored: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any], list[TaskFailure]]:
        """A task's ``(args, kw)``, freshly unpickled from its message, its
        Deferred arguments replaced by their stored results; and the
        failures among those results."""
        failures: list[TaskFailure] = []
        persistent_load = None
        if envelope["args"]:
            values: dict[str, Any] = {}
            for arg_id, arg_name in envelope["args"].items():
                msg = stored.get(arg_id, TASK_EXPIRED)
                value = msg if msg is TASK_EXPIRED else self.serializer.loads(msg)
                if value is TASK_EXPIRED:
                    value = TaskExpired(
                        arg_name, self.name, arg_id, "task expired before a result was returned"
                    )
                elif value is TASK_CANCELLED:
                    value = TaskCancelled(arg_name, self.name, arg_id)
                if isinstance(value, TaskFailure):
                    failures.append(value)
                values[arg_id] = value
            persistent_load = values.__getitem__
        args, kw = self.serializer.loads(envelope["payload"], persistent_load)
        return args, kw, failures

    # -- periodic tasks -----------------------------------------------------

    def periodic(
        self,
        task: Queue | Task | str,
        every: float | None = None,
        cron: str | None = None,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        name: str | None = None,
        **options: Any,
    ) -> str:
        """Enqueue ``task(*args, **kwargs)`` at every tick of a schedule, for
        as long as the entry is stored (see :doc:`periodic`).

        The entry is stored in the backend (``redis://``: under the queue's
        keys, so it survives restarts and every machine sees it); worker
        pools started with ``scheduler=True`` (``poolx worker
        --scheduler``) enqueue its ticks, each exactly once however many
        schedulers run.  Registering a name again replaces the entry; if its
        schedule is unchanged, its next run is kept.

        :param task: The task: ``q.tasks.f`` (a :class:`~poolx.task.Queue`
            attribute of this broker), a :class:`~poolx.task.Task` (its
            options are kept) or a dotted task name.
        :param every: Run every ``every`` seconds; the first run is one
            period after the entry is first stored.
        :param cron: Or run at the times of a cron expression (UTC; needs
            the ``cron`` extra, croniter).
        :param args: Positional arguments of every run (no Deferred).
        :param kwargs: Keyword arguments of every run.
        :param name: The entry's name (default: the task's name).
        :param options: :class:`~poolx.task.Task` options of every run
            (``timeout``, ``retry``, ``max_retries``...; not ``id``,
            ``delay`` or ``eta``).  Runs ignore their results unless
            ``ignore_result=False`` or a ``result_timeout`` is given.
        :returns: The entry's name.
        :raises ValueError: for an invalid schedule, option or name.
        :raises SerializationError: if the arguments cannot be serialized.
        :raises NotImplementedError: if the backend cannot store periodic
            tasks.
        :raises poolx.exceptions.ExtraNotInstalled: for ``cron`` without
            croniter.
        """
        store = self._taskqueue
        if not _extends(store, "set_periodic"):
            raise NotImplementedError(
                f"the {type(store).__module__} backend cannot store periodic tasks")
        schedule = Schedule(every=every, cron=cron)
        template = self._periodic_task(task, options)
        entry = template.name if name is None else name
        if not isinstance(entry, str) or not entry:
            raise ValueError(f"invalid periodic entry name: {entry!r}")
        run = FunctionTask(template.name, tuple(args), dict(kwargs or {}), template.options)
        _message, pending = self._task_message(run)  # fails here, not at the first tick
        if pending:
            raise ValueError(f"periodic task {template.name}: its arguments hold Deferred results")
        spec = self.serializer.dumps(
            {"args": run.args, "kwargs": run.kw, "options": template.options})
        store.set_periodic(entry, template.name, schedule.text, spec, schedule.first(time.time()))
        log.debug("periodic %s: %s %s [%s]", entry, template.name, schedule.text, self.name)
        return entry

    def _periodic_task(self, task: Queue | Task | str, options: dict[str, Any]) -> Task:
        """The :class:`~poolx.task.Task` every run of a periodic entry is."""
        if isinstance(task, str):
            task = self.queue(task)
        if isinstance(task, Queue):
            owner = queue_broker(task)
            if (owner.url, owner.name) != (self.url, self.name):
                raise ValueError(f"{task!r} belongs to {redact_url(owner.url)} [{owner.name}], "
                                 "not this queue")
            base: dict[str, Any] = {}
            queue = task
        elif isinstance(task, Task):
            if task.delay is not None or task.eta is not None:
                raise ValueError("a periodic task takes no delay or eta")
            base = {key: value for key, value in task.options.items() if key != "id"}
            if isinstance(base.get("retry"), dict):
                base["retry"] = Retry.from_dict(base["retry"])
            queue = task.queue
        else:
            raise ValueError(f"invalid periodic task: {task!r} (a queue attribute, a Task or a name)")
        for refused in ("id", "delay", "eta"):
            if refused in options:
                raise ValueError(f"a periodic task takes no {refused} (each run gets its own id)")
        merged = dict(base, **options)
        merged.setdefault("ignore_result", "result_timeout" not in merged)
        try:
            return Task(queue, **merged)
        except TypeError as err:
            raise ValueError(f"invalid task options {options!r}: {err}") from None

    def unperiodic(self, name: str) -> bool:
        """Remove the periodic entry ``name``: no tick of it is enqueued
        after this returns (runs already enqueued still run).

        :returns: Whether the entry existed.
        """
        store = self._taskqueue
        if not _extends(store, "remove_periodic"):
            return False
        return store.remove_periodic(name)

    def periodic_entries(self) -> list[PeriodicEntry]:
        """The stored periodic entries, the next to run first (``[]`` on a
        backend without periodic tasks)."""
        store = self._taskqueue
        if not _extends(store, "periodic_entries"):
            return []
        return store.periodic_entries()[1]

    def run_periodic(self, entry: PeriodicEntry, now: float) -> bool:
        """Enqueue the tick of ``entry`` due at its ``next_run``, if no other
        scheduler did (a scheduler's call; ``now`` is the backend's time).
        The run's task id is ``<entry name>@<due time in ms>``.

        :returns: True if this call enqueued it.
        :raises poolx.periodic.PeriodicEntryError: if the entry cannot be
            read (a different secret, a damaged spec): the caller logs it and
            skips that version.  Errors of the backend's claim propagate as
            they are (the caller retries them).
        """
        try:
            schedule = Schedule.from_text(entry.schedule)
            spec = self.serializer.loads(entry.spec)
            options = dict(spec["options"], id=f"{entry.name}@{round(entry.next_run * 1000)}")
            run = FunctionTask(entry.task, tuple(spec["args"]), dict(spec["kwargs"]), options)
            message, _pending = self._task_message(run)
            following = schedule.next_after(entry.next_run, now)
        except Exception as err:
            raise PeriodicEntryError(
                f"periodic entry {entry.name!r} cannot run: {type(err).__name__}: {err}") from err
        claimed = self._taskqueue.claim_periodic(entry, following, Deferred(self, run), message)
        if claimed:
            log.debug("periodic %s: enqueued %s [%s:%s]", entry.name, run.name, self.name, run.id)
        return claimed


def _extends(store: AbstractTaskQueue, method: str) -> bool:
    """Does the backend implement an optional method of the contract?"""
    return getattr(type(store), method, None) is not getattr(AbstractTaskQueue, method)


def _final(task: FunctionTask, failure: TaskFailure) -> TaskFailure:
    """The failure of a task with a Retry policy as stored: its error says
    how many attempts ran (and :attr:`~poolx.task.TaskFailure.attempts`)."""
    attempts = task.attempt
    word = "attempt" if attempts == 1 else "attempts"
    final = failure.replace(error=f"{failure.error} ({attempts} {word})")
    final.attempts = attempts
    return final


def _expired(task: Any, queue: str) -> TaskExpired:
    return TaskExpired(task.name, queue, task.id, "task expired before a result was returned")


def _stub_task(name: str, task_id: str, options: Any) -> FunctionTask:
    """A FunctionTask with the given id and options but no arguments yet.

    Only the known options are kept, so a damaged message cannot smuggle an
    ``id`` or anything else into the failure it is recorded as.
    """
    known = options if isinstance(options, dict) else {}
    kept = {key: known[key] for key in FunctionTask.OPTIONS if key in known}
    return FunctionTask(name, (), {}, dict(kept, id=task_id))


# -- finding backends ---------------------------------------------------------


def register_backend(scheme: str, factory: Any, replace: bool = False) -> None:
    """Serve ``scheme://`` URLs with ``factory`` (a class, a callable or a
    ``"module:attribute"`` string); see :mod:`poolx.queue.registry`.

    :raises ValueError: if the scheme was already registered in code and
        ``replace`` is false.
    """
    registry.register(scheme, factory, replace=replace)


def _scheme(url: Any) -> str:
    if not isinstance(url, str):
        raise ValueError(f"invalid broker URL: {url!r} (expected a string)")
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as err:
        raise ValueError(f"invalid broker URL: {shown} (malformed: {err})") from None
    if not parts.scheme or not url.partition(":")[2].startswith("//"):
        raise ValueError(f"invalid broker URL: {shown} (malformed: expected scheme://...)")
    return parts.scheme


def get_broker(
    url: str,
    name: str = DEFAULT,
    *args: Any,
    serializer: Serializer | None = None,
    secret: Any = None,
    **kw: Any,
) -> Broker:
    """Create a broker for the task queue at ``url``.

    :param url: Backend URL, e.g. ``memory://`` or ``redis://host:6379/0``.
    :param name: The name of the queue to expose or invoke tasks on.
    :param args: Passed to the backend's factory, with ``kw``.
    :param serializer: Message serializer (default: the backend's, else pickle).
    :param secret: Shared secret to sign and verify messages with (default:
        the ``POOLX_SECRET`` environment variable; see :class:`Broker`).
    :raises ValueError: for a malformed URL or an unknown scheme (naming the
        URL, without its password).
    """
    scheme = _scheme(url)
    try:
        factory = registry.lookup(scheme)
    except KeyError:
        known = ", ".join(f"{s}://" for s in registry.schemes())
        raise ValueError(
            f"invalid broker URL: {redact_url(url)} (unknown scheme {scheme!r}; known: {known})"
        ) from None
    make = getattr(factory, "factory", factory)
    return Broker(make(url, name, *args, **kw), serializer=serializer, secret=secret)


def get_queue(url: str, name: str = DEFAULT, target: str = "", **options: Any) -> Queue:
    """Get a queue for invoking tasks.

    :param url: URL of the task queue backend.
    :param name: The queue name; tasks run only if a worker consumes it.
    :param target: Task namespace (like a Python module) or task name.
    :param options: Default :class:`~poolx.task.Task` options for every task
        invoked through the queue.
    """
    return get_broker(url, name).queue(target, **options)


def batch(queue: Queue | Broker) -> contextlib.AbstractContextManager[Any]:
    """Enqueue in batches: ``with batch(q): results = [q.f(i) for i in ...]``.

    :param queue: A :class:`~poolx.task.Queue` (from :func:`get_queue`) or a
        :class:`Broker`.  See :meth:`Broker.batch`.
    """
    broker = queue if isinstance(queue, Broker) else queue_broker(queue)
    return broker.batch()  # type: ignore[union-attr]


set_broker_connector(get_broker)

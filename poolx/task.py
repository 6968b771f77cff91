"""The caller's side of the task queue: queues, tasks, results, failures.

Owned here (WorQ's ``worq.task`` under poolx's name):

* :class:`Queue` — builds dotted task names by attribute access
  (``q.foo.bar``) and enqueues a task when called.
* :class:`Task` — a task name plus options (id, on_error, ignore_result,
  result_timeout, heartrate, max_retries, and poolx's per-task limits
  timeout, soft_timeout, memory_limit, its :class:`Retry` policy and its
  due time, ``delay`` or ``eta``); calling it enqueues.
* :class:`Retry` — when and how often a failed task runs again: which
  errors, how many more times, after which back-off.
* :class:`FunctionTask` — one invocation (name, id, args, kwargs, options);
  what travels through the queue and what a worker invokes.
* :class:`Deferred` — the handle on one task's result.  It can be waited on
  (blocking on the backend, never polling), passed as an argument to other
  tasks (the *value* is passed), pickled into another process, and follows a
  Deferred that a task returned as its value.
* :class:`TaskSpace` — a namespace of task callables for
  :meth:`Broker.expose <poolx.core.Broker.expose>`.
* :func:`wait_all` — wait for many Deferreds with few backend calls.
* :class:`TaskFailure` and its subclasses :class:`TaskExpired`,
  :class:`DuplicateTask` and :class:`TaskCancelled` — every way a task can
  fail ends as one of these;
  :func:`judge_failure` marks one that the task's :class:`Retry` policy
  covers (the worker decides, by the exception's type; the broker then
  schedules the next attempt instead of storing the failure).
* The one home of the task options' defaults (:attr:`Task.OPTIONS`, read by
  the option properties of :class:`Task` and :class:`FunctionTask`), of the
  lease a heartbeat grants (:func:`lease_seconds`) and of the error text of
  a failure (:func:`error_text`).

Layer L2: this module imports only L0 (:mod:`poolx.const`,
:mod:`poolx.checks`) and :mod:`poolx.progress` (the bar of :func:`wait_all`).  Nothing here touches storage directly: every read and
write goes through the broker the queue was made from, which this module
knows only as the :class:`TaskBroker` protocol (:class:`poolx.core.Broker`
implements it).  A :class:`Deferred` read from bytes finds its broker
through the connector that :mod:`poolx.core` registers when it is imported
(:func:`set_broker_connector`); the pickle names that connector, so a fresh
process that unpickles a Deferred imports :mod:`poolx.core` by itself.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Protocol

from poolx import progress
from poolx.checks import check_count, check_seconds, parse_size
from poolx.const import HOUR
from poolx.exceptions import PoolError, SoftTimeLimitExceeded, Terminated
from poolx.progress import ProgressOption

__all__ = [
    "Queue",
    "Task",
    "Retry",
    "FunctionTask",
    "Deferred",
    "TaskSpace",
    "wait_all",
    "TaskFailure",
    "TaskExpired",
    "DuplicateTask",
    "TaskCancelled",
    "CANCELLED_ERROR",
    "TaskBroker",
    "queue_broker",
    "queue_target",
    "lease_seconds",
    "error_text",
    "judge_failure",
    "set_broker_connector",
    "restore_deferred",
]

log = logging.getLogger(__name__)

_MISSING: Any = object()
_NO_OPTIONS: dict[str, Any] = {}  # never changed: FunctionTask copies what it is given

DEFAULT_HEARTRATE = 30
"""Seconds between two heartbeats of a running task."""
DEFAULT_MAX_RETRIES = 3
"""How often a task is delivered again after its consumer was lost."""


def _new_task_id() -> str:
    """A fresh task id: a random (version 4) UUID as 32 hex digits, as
    ``uuid.uuid4().hex`` writes it, made without building a UUID object."""
    value = int.from_bytes(os.urandom(16), "big") & _UUID4_KEEP | _UUID4_SET
    return f"{value:032x}"


_UUID4_KEEP = ~(0xF000 << 64 | 0xC000 << 48)  # the version and variant bits...
_UUID4_SET = 4 << 76 | 0x8000 << 48  # ...say version 4, RFC 4122 variant


def lease_seconds(heartrate: float) -> float:
    """How long a heartbeat keeps a running task leased: ``2 * heartrate + 5``
    seconds, so that one late or lost heartbeat never loses the task."""
    return heartrate * 2 + 5


def error_text(err: BaseException) -> str:
    """The error text of a :class:`TaskFailure` caused by ``err``:
    ``'Type: message'`` (WorQ's format)."""
    return f"{type(err).__name__}: {err}"


class TaskBroker(Protocol):
    """What this module needs from a broker (:class:`poolx.core.Broker`)."""

    name: str
    url: str
    tasks: dict[str, Callable[..., Any]]

    def enqueue(self, task: FunctionTask) -> Deferred | None: ...

    def set_result(self, task: FunctionTask, result: Any) -> None: ...

    def pop_result(self, task: Any, timeout: float | None = 0) -> Any: ...

    def pop_results(self, tasks: list[Any], timeout: float | None = 0) -> dict[str, Any]: ...

    def status(self, result: Deferred) -> Any: ...

    def cancel(self, task_id: str) -> bool: ...

    def discard_pending_tasks(self) -> None: ...

    def __len__(self) -> int: ...


_connector: Callable[[str, str], TaskBroker] | None = None


def set_broker_connector(connect: Callable[[str, str], TaskBroker]) -> None:
    """Register how a :class:`Deferred` read from bytes finds its broker:
    ``connect(url, queue_name)``.  :mod:`poolx.core` registers
    :func:`~poolx.core.get_broker` when it is imported; ``connect`` must be
    a module-level function (pickles of Deferreds name it)."""
    global _connector
    _connector = connect


class Queue:
    """Queue for invoking remote tasks.

    New ``Queue`` objects are made by attribute access::

        >>> q = broker.queue()
        >>> q.foo
        <Queue foo [default]>
        >>> q.foo.bar
        <Queue foo.bar [default]>

    Calling a ``Queue`` enqueues the task named by its target and returns a
    :class:`Deferred` (or ``None`` for ``ignore_result`` tasks)::

        >>> q.foo.func(1, key=None)
        <Deferred foo.func [default:...] enqueued>

    ``len(q)`` is the approximate number of tasks waiting to run, and
    ``del q[:]`` discards them.  Two queues are equal when they share a broker
    (their targets may differ).

    :param broker: The :class:`~poolx.core.Broker` to enqueue on.
    :param target: The dotted task (space) path.
    :param options: Default :class:`Task` options for tasks called through
        this queue and the queues derived from it.
    """

    def __init__(self, broker: TaskBroker, target: str = "", **options: Any) -> None:
        self.__broker = broker
        self.__target = target
        self.__options = options

    def __getattr__(self, name: str) -> Queue:
        if name.startswith("__") and name.endswith("__"):
            # Protocol look-ups (copy, pickle, IPython...) are not task names.
            raise AttributeError(name)
        target = f"{self.__target}.{name}" if self.__target else name
        return Queue(self.__broker, target, **self.__options)

    def __call__(self, *args: Any, **kw: Any) -> Deferred | None:
        """Enqueue the task named by this queue's target."""
        if not self.__options:  # what Task(self)(...) does, without checking no options
            return self.__broker.enqueue(FunctionTask(self.__target, args, kw, _NO_OPTIONS))
        return Task(self, **self.__options)(*args, **kw)

    def __len__(self) -> int:
        """The approximate number of tasks waiting to run."""
        return len(self.__broker)

    def __delitem__(self, key: Any) -> None:
        """``del queue[:]`` discards every task still waiting to run."""
        if not (isinstance(key, slice) and key == slice(None)):
            raise ValueError("delitem is only valid with a full slice ([:])")  # WorQ's text
        self.__broker.discard_pending_tasks()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Queue):
            return NotImplemented
        return self.__broker is other.__broker

    def __hash__(self) -> int:
        return hash(id(self.__broker))

    def __repr__(self) -> str:
        return f"<Queue {self.__target} [{self.__broker.name}]>"

    def __str__(self) -> str:
        return self.__target


def queue_broker(queue: Queue) -> TaskBroker:
    """The broker a :class:`Queue` enqueues on.

    A function, not an attribute: every attribute of a Queue names a task.
    """
    return queue._Queue__broker  # type: ignore[attr-defined]


def queue_target(queue: Queue) -> str:
    """The dotted task (space) name a :class:`Queue` stands for."""
    return queue._Queue__target  # type: ignore[attr-defined]


def _exception_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class Retry:
    """When a failed task runs again: the ``retry`` option of a :class:`Task`.

    ::

        Task(q.tasks.fetch, retry=poolx.Retry(max=3, delay=0.5, backoff=2.0,
                                              on=(ConnectionError,)))(url)

    A task that raises one of ``on`` runs again after ``delay *
    backoff ** n`` seconds (``n`` = 0 before the first retry, 1 before the
    second...), at most ``max`` more times.  Meanwhile it is ``scheduled``
    (a delayed task: it holds no worker, and it survives a consumer that is
    killed or a Redis restart like any stored task); its
    :class:`Deferred` and the tasks that take it as an argument wait for the
    *final* outcome: the value of the attempt that succeeded, or the
    :class:`TaskFailure` of the last one, whose :attr:`~TaskFailure.attempts`
    (and error text) say how many attempts ran.

    :param max: How many more times the task may run after its first
        attempt (0: never again).
    :param delay: Seconds before the first retry.
    :param backoff: Factor applied to the delay for each further retry.
    :param jitter: Spread each delay randomly by up to ±25 %, so that tasks
        that failed together do not all retry at the same instant.
    :param on: The exception classes that are retried (their subclasses
        too), or their dotted names (``"module.ClassName"``).  Default: any
        :class:`Exception`.
    :param on_timeout: Also retry a task that hit its time limit (soft or
        hard), its memory limit, or whose worker process was lost.  These
        are not retried by default: a task that ran out of time or memory
        usually does so again.  (A consumer that is lost as a whole is a
        different matter: its tasks are delivered again under
        ``max_retries``, see :doc:`/delivery`.)

    The policy travels with the task as plain data (class *names*), so the
    worker that runs the task decides by the exception's type, whatever
    serializer the queue uses.
    """

    JITTER = 0.25
    """The largest relative change jitter makes to a delay."""

    def __init__(
        self,
        max: int = 3,
        delay: float = 1.0,
        backoff: float = 2.0,
        jitter: bool = True,
        on: type[Exception] | str | Iterable[type[Exception] | str] = (Exception,),
        on_timeout: bool = False,
    ) -> None:
        self.max: int = check_count("Retry max", max, 0)  # type: ignore[assignment]
        self.delay: float = check_seconds("Retry delay", delay, allow_none=False,
                                          allow_zero=True)  # type: ignore[assignment]
        self.backoff: float = check_seconds("Retry backoff", backoff,
                                            allow_none=False)  # type: ignore[assignment]
        if not isinstance(jitter, bool) or not isinstance(on_timeout, bool):
            raise TypeError("Retry jitter and on_timeout must be True or False")
        self.jitter = jitter
        self.on_timeout = on_timeout
        given = (on,) if isinstance(on, (type, str)) else tuple(on)
        if not given:
            raise ValueError("Retry on must name at least one exception class")
        names = []
        for cls in given:
            if isinstance(cls, str) and cls.rpartition(".")[0]:
                names.append(cls)
            elif isinstance(cls, type) and issubclass(cls, Exception):
                names.append(_exception_name(cls))
            else:
                raise TypeError(
                    f"Retry on must hold Exception subclasses or their dotted names, not {cls!r}"
                )
        self.on: tuple[str, ...] = tuple(names)
        """The dotted names of the exception classes that are retried."""

    def covers(self, error: BaseException) -> bool:
        """Whether a task that failed with ``error`` runs again (retries left
        permitting): ``error`` is an instance of one of :attr:`on` —
        compared by class name along its type's MRO, so the worker need not
        import anything — or a time limit, memory limit or lost worker with
        :attr:`on_timeout` set.  A task that was terminated on request is
        never retried."""
        if isinstance(error, Terminated):
            return False
        if isinstance(error, (PoolError, SoftTimeLimitExceeded)):
            return self.on_timeout
        if not isinstance(error, Exception):
            return False
        wanted = set(self.on)
        return any(_exception_name(cls) in wanted for cls in type(error).__mro__)

    def countdown(self, retries: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds before retry number ``retries + 1``: ``delay * backoff **
        retries``, spread by up to ±25 % with jitter.

        :param retries: How many retries ran before this one.
        :param rand: The random source (``[0, 1)``) jitter draws from.
        """
        seconds = self.delay * self.backoff ** retries
        if self.jitter:
            seconds *= 1 + self.JITTER * (2 * rand() - 1)
        return seconds

    def to_dict(self) -> dict[str, Any]:
        """The policy as plain data (how it travels with the task)."""
        return {"max": self.max, "delay": self.delay, "backoff": self.backoff,
                "jitter": self.jitter, "on": list(self.on), "on_timeout": self.on_timeout}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Retry:
        """The policy :meth:`to_dict` wrote.

        :param data: The dict :meth:`to_dict` returned.
        """
        return cls(**data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Retry) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        on = ", ".join(self.on)
        return (f"Retry(max={self.max}, delay={self.delay:g}, backoff={self.backoff:g}, "
                f"jitter={self.jitter}, on=({on},), on_timeout={self.on_timeout})")


def judge_failure(task: FunctionTask, failure: TaskFailure, error: BaseException) -> TaskFailure:
    """Mark ``failure`` (the task's failure because of ``error``) as
    :attr:`~TaskFailure.retryable` if the task's :class:`Retry` policy covers
    ``error``; return it.

    Called where the exception is known — the worker that ran the task, the
    consumer that hears of a time limit — since only its type decides, and
    the failure may cross a process boundary before the broker sees it."""
    retry = task.retry
    if retry is not None and task.attempt <= retry.max and retry.covers(error):
        failure.retryable = True  # not on the last attempt: that failure is final, logged as such
    return failure


def _eta_delay(eta: Any) -> float:
    """Seconds from now until the aware datetime ``eta``."""
    return eta.timestamp() - time.time()


def _checked(name: str, check: Callable[..., Any], value: Any, **kw: Any) -> Any:
    """``check(name, value)``, its complaint turned into WorQ's ValueError."""
    try:
        return check(name, value, **kw)
    except (TypeError, ValueError):
        raise ValueError(f"invalid {name}: {value!r}") from None


def _option_properties(cls: type) -> type:
    """Add a read-only property per :attr:`Task.OPTIONS` entry: the value in
    ``self.options``, else the default (WorQ's ``option_descriptors``)."""

    def make(name: str, default: Any) -> property:
        return property(lambda self: self.options.get(name, default),
                        doc=f"The ``{name}`` option (default {default!r}).")

    for name, default in Task.OPTIONS.items():
        if name not in cls.__dict__:  # a class may define its own (``retry``)
            setattr(cls, name, make(name, default))
    return cls


class Task:
    """A task with custom options; calling it enqueues an invocation.

    :param queue: The :class:`Queue` naming the task to run.
    :param id: A unique identifier string for this task, or a callable that
        returns one when called with the task's arguments.  A fresh UUID is
        used by default.  Only one task with a given id may be in the queue
        at a time: enqueueing a duplicate raises :class:`DuplicateTask`.  A
        task with ``ignore_result=True`` leaves the queue when a worker takes
        it.
    :param on_error: What happens when a Deferred argument's task fails.
        ``Task.FAIL`` (the default): this task fails with that argument's
        :class:`TaskFailure` without running.  ``Task.PASS``: the
        :class:`TaskFailure` is passed as the argument value.
    :param ignore_result: Fire and forget: calling returns ``None`` instead
        of a :class:`Deferred`, and no result is stored.
    :param result_timeout: Seconds to keep the result after the task
        completed (default one hour).
    :param heartrate: Seconds between heartbeats that worker pools send for a
        running task to keep its result from expiring (default 30).  A
        backend that leases taken tasks (``redis://``) considers the task's
        consumer lost after ``2 * heartrate + 5`` seconds without one.
    :param max_retries: How many times a task is delivered again after the
        consumer that took it was lost (its process killed, its machine gone:
        the lease ran out) before it fails with a :class:`TaskFailure` saying
        so (default 3).  Only backends with leases redeliver; a task that
        raises, or whose worker process dies under a live pool, is never
        retried: it fails at once.
    :param timeout: Hard time limit in seconds (poolx, beyond WorQ).  A
        process worker pool kills the worker running the task when it
        expires, and the task fails with a :class:`TaskFailure` whose error
        starts with ``TimeLimitExceeded``.  Default: the pool's own limit.
    :param soft_timeout: Soft time limit in seconds (poolx):
        :class:`~poolx.exceptions.SoftTimeLimitExceeded` is raised *inside*
        the task, which may catch it to clean up.
    :param memory_limit: Memory the worker may use while running the task
        (poolx): bytes, or a size string such as ``"512MB"`` (stored as
        bytes).  Over it the worker is killed and the task fails with
        ``MemoryLimitExceeded``.
    :param retry: A :class:`Retry` policy (poolx): the task runs again,
        after a back-off, when it fails with one of the policy's errors; its
        Deferred resolves to the final outcome.  Independent of
        ``max_retries`` (redelivery after a lost consumer).
    :param delay: Seconds from each call until the task may run (poolx): it
        is stored with status ``scheduled`` and queued when due.
    :param eta: The time the task may run from (poolx): a timezone-aware
        :class:`~datetime.datetime` (a naive one raises ``ValueError``: its
        time zone would be a guess).  Only one of ``delay`` and ``eta``.

    The three limits are applied by :class:`poolx.pool.process.WorkerPool`
    (and any :class:`~poolx.consumer.BrokerConsumer`); thread pools cannot
    interrupt a thread and ignore them.
    :raises ValueError: for an invalid option value.

    ``delay`` and ``eta`` are not stored with the task's options: each call
    turns them into the time the task is due (see :attr:`FunctionTask.delay`).
    """

    PASS = "pass"
    FAIL = "fail"

    OPTIONS: dict[str, Any] = {
        "on_error": FAIL,
        "ignore_result": False,
        "result_timeout": HOUR,
        "heartrate": DEFAULT_HEARTRATE,
        "max_retries": DEFAULT_MAX_RETRIES,
        "timeout": None,
        "soft_timeout": None,
        "memory_limit": None,
        "retry": None,
        "attempt": 1,
    }
    """Every option and its default: the one place defaults are written.
    Only options that differ from these are stored with a task.  ``retry``
    is stored as :meth:`Retry.to_dict`; ``attempt`` (which attempt of a
    task with a :class:`Retry` policy this is) is set by the broker when it
    schedules a retry, never by the caller."""

    def __init__(
        self,
        queue: Queue,
        id: str | Callable[..., str] | None = None,
        on_error: str = FAIL,
        ignore_result: bool = False,
        result_timeout: float = OPTIONS["result_timeout"],
        heartrate: float = OPTIONS["heartrate"],
        max_retries: int = OPTIONS["max_retries"],
        timeout: float | None = None,
        soft_timeout: float | None = None,
        memory_limit: int | str | None = None,
        retry: Retry | None = None,
        delay: float | None = None,
        eta: datetime | None = None,
    ) -> None:
        if not isinstance(queue, Queue):
            raise ValueError(f"invalid queue: {queue!r}")
        if id is not None and not (isinstance(id, str) or callable(id)):
            raise ValueError(f"invalid id: {id!r}")
        if on_error not in (Task.PASS, Task.FAIL):
            raise ValueError(f"invalid on_error: {on_error!r}")
        if ignore_result and result_timeout != Task.OPTIONS["result_timeout"]:
            raise ValueError("ignore_result is incompatible with result_timeout")
        values = {
            "on_error": on_error,
            "ignore_result": bool(ignore_result),
            "result_timeout": _checked("result_timeout", check_seconds, result_timeout,
                                       allow_none=False),
            "heartrate": _checked("heartrate", check_seconds, heartrate, allow_none=False),
            "max_retries": _checked("max_retries", check_count, max_retries, minimum=0),
            "timeout": _checked("timeout", check_seconds, timeout),
            "soft_timeout": _checked("soft_timeout", check_seconds, soft_timeout),
            "memory_limit": _checked("memory_limit", parse_size, memory_limit),
            "retry": None if retry is None else _checked_retry(retry).to_dict(),
        }
        self.delay: float | None = _checked("delay", check_seconds, delay, allow_zero=True)
        """Seconds from each call until the task may run (or None)."""
        self.eta: datetime | None = _checked_eta(eta, delay)
        """The time the task may run from (or None)."""
        # The values as given (an int stays an int), validated above.
        given = {"result_timeout": result_timeout, "heartrate": heartrate, "timeout": timeout,
                 "soft_timeout": soft_timeout}
        self.queue = queue
        self.name: str = queue_target(queue)
        options: dict[str, Any] = {} if id is None else {"id": id}
        for key, value in values.items():
            value = given.get(key, value)
            if value != Task.OPTIONS[key]:
                options[key] = value
        self.options = options

    @property
    def broker(self) -> TaskBroker:
        return queue_broker(self.queue)

    def __call__(self, *args: Any, **kw: Any) -> Deferred | None:
        """Enqueue an invocation; return its :class:`Deferred` (or ``None``)."""
        task = FunctionTask(self.name, args, kw, self.options)
        if self.eta is not None:
            task.delay = _eta_delay(self.eta)
        elif self.delay is not None:
            task.delay = self.delay
        return self.broker.enqueue(task)

    def with_options(self, options: dict[str, Any]) -> Task:
        """A copy of this task with a new set of options (replacing the old);
        its ``delay`` or ``eta`` carries over unless ``options`` gives one."""
        options = dict(options)
        if isinstance(options.get("retry"), dict):  # as stored in self.options
            options["retry"] = Retry.from_dict(options["retry"])
        if "delay" not in options and "eta" not in options:
            options.update(delay=self.delay, eta=self.eta)
        return Task(self.queue, **options)

    @property
    def retry(self) -> Retry | None:
        """The :class:`Retry` policy (None: a failure is final)."""
        return _retry_of(self.options)

    def __repr__(self) -> str:
        return f"<Task {self.name} [{self.broker.name}]>"


def _checked_retry(retry: Any) -> Retry:
    if not isinstance(retry, Retry):
        raise ValueError(f"invalid retry: {retry!r} (expected a poolx.Retry)")
    return retry


def _checked_eta(eta: Any, delay: Any) -> datetime | None:
    if eta is None:
        return None
    if delay is not None:
        raise ValueError("give delay or eta, not both")
    if not isinstance(eta, datetime):
        raise ValueError(f"invalid eta: {eta!r} (expected a timezone-aware datetime)")
    if eta.tzinfo is None or eta.utcoffset() is None:
        raise ValueError(
            f"eta must be a timezone-aware datetime, got the naive {eta.isoformat()} "
            "(say which zone: datetime.now(timezone.utc) + timedelta(...))"
        )
    return eta


def _retry_of(options: dict[str, Any]) -> Retry | None:
    data = options.get("retry")
    if data is None:
        return None
    return data if isinstance(data, Retry) else Retry.from_dict(data)


class FunctionTask:
    """One invocation of a named task: what travels through the queue.

    :param name: The dotted task name.
    :param args: Positional arguments (may contain :class:`Deferred`).
    :param kw: Keyword arguments (may contain :class:`Deferred`).
    :param options: :class:`Task` options; an ``id`` option (string or
        callable of the arguments) sets :attr:`id`.
    """

    OPTIONS = Task.OPTIONS

    delay: float | None = None
    """Seconds from enqueueing until the task may run (None: at once).  Set
    by :class:`Task` from its ``delay`` or ``eta`` at each call; it is not
    part of the task's message (the backend stores the due time)."""

    def __init__(self, name: str, args: tuple, kw: dict[str, Any], options: dict[str, Any]) -> None:
        options = dict(options)
        ident = options.pop("id", None)
        if ident is None:
            ident = _new_task_id()
        elif not isinstance(ident, str):
            ident = ident(*args, **kw)
            if not isinstance(ident, str):
                raise ValueError(f"task {name} id function returned {ident!r}, not a string")
        self.id: str = ident
        self.name = name
        self.args = args
        self.kw = kw
        self.options = options

    # One property per option (on_error, ignore_result, result_timeout,
    # heartrate, max_retries, timeout, soft_timeout, memory_limit, attempt:
    # 1 for the first attempt, 2 for the first retry...) is added by
    # _option_properties from Task.OPTIONS; retry is defined below.
    on_error: str
    ignore_result: bool
    result_timeout: float
    heartrate: float
    max_retries: int
    timeout: float | None
    soft_timeout: float | None
    memory_limit: int | None
    attempt: int

    @property
    def retry(self) -> Retry | None:
        """The :class:`Retry` policy (None: a failure is final)."""
        return _retry_of(self.options)

    @property
    def lease(self) -> float:
        """Seconds one heartbeat keeps this task leased (:func:`lease_seconds`)."""
        return lease_seconds(self.heartrate)

    @property
    def on_error_pass(self) -> bool:
        return self.on_error == Task.PASS

    def invoke(
        self,
        broker: TaskBroker,
        return_result: bool = False,
        reraise: tuple[type[BaseException], ...] = (),
    ) -> Any:
        """Run the task with ``broker``'s exposed callables.

        The outcome (the return value, or a :class:`TaskFailure` for an
        unknown task or an exception) is stored with
        :meth:`Broker.set_result <poolx.core.Broker.set_result>`, or returned
        instead when ``return_result`` is true (a process pool sends it back
        to its parent).  A ``BaseException`` (``SystemExit``,
        ``KeyboardInterrupt``) is recorded as a failure first and then
        re-raised, so the task's waiters are never left hanging; with
        ``return_result`` the failure is returned instead (as WorQ does), and
        the caller decides what the exception means for its worker.

        :param reraise: Exception types that propagate as they are instead
            of being recorded (a process worker lets the pool's
            ``SoftTimeLimitExceeded`` through, so the pool reports it by type).
        """
        queue_name = broker.name
        log.debug("invoke %s [%s:%s]", self.name, queue_name, self.id)
        try:
            func = broker.tasks[self.name]
        except KeyError:
            result: Any = TaskFailure(self.name, queue_name, self.id, "no such task")
            log.error("%s", result)
        else:
            try:
                result = func(*self.args, **self.kw)
            except reraise:
                raise
            except Exception as err:
                result = judge_failure(
                    self, TaskFailure(self.name, queue_name, self.id, error_text(err)), err
                )
                # A failure its Retry policy covers is logged by the broker
                # (the retry, or the final failure), with the traceback here.
                level = logging.DEBUG if result.retryable else logging.ERROR
                log.log(level, "task failed: %s [%s:%s]", self.name, queue_name, self.id,
                        exc_info=True)
            except BaseException as err:
                log.error(
                    "worker died in task: %s [%s:%s]", self.name, queue_name, self.id,
                    exc_info=True,
                )
                failure = TaskFailure(self.name, queue_name, self.id, error_text(err))
                if return_result:
                    return failure
                broker.set_result(self, failure)
                raise
        if return_result:
            return result
        broker.set_result(self, result)
        return None

    def __repr__(self) -> str:
        return f"<FunctionTask {self.name} [{self.id}]>"


class Deferred:
    """The handle on a task's result.

    Returned by calling a :class:`Queue` or :class:`Task`.  Pass it as an
    argument (at any depth in lists, dicts, tuples) to another task and that
    task runs when the result is ready, receiving the *value*.

    A Deferred is safe to share between threads and can be pickled: the copy
    reconnects to the same broker URL and queue name (``memory://`` queues
    live in one process, so copies there must stay in that process).

    :param broker: The broker the task was enqueued on.
    :param task: The :class:`FunctionTask` (at least ``id`` and ``name``).
    """

    def __init__(self, broker: TaskBroker | None, task: FunctionTask) -> None:
        self._broker = broker
        self._address: tuple[str, str] | None = None  # (url, queue name) until connected
        self.task = task
        self._status: str | None = None
        self._value: Any = _MISSING
        self._follow: Deferred | None = None
        self._lock = threading.Lock()

    @property
    def broker(self) -> TaskBroker:
        """The broker the task was enqueued on (for a Deferred read from
        bytes: a broker for the same URL and queue name, made on first use)."""
        broker = self._broker
        if broker is None:
            if _connector is None:
                raise RuntimeError(
                    "a Deferred read from bytes needs poolx.core to reconnect: import poolx.core"
                )
            assert self._address is not None
            broker = self._broker = _connector(*self._address)
        return broker

    @property
    def id(self) -> str:
        return self.task.id

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def value(self) -> Any:
        """The value the task returned.

        If the task returned another Deferred, this is *that* task's value.

        :raises AttributeError: if the task has not completed yet.
        :raises TaskFailure: if the task failed for any reason.
        """
        self.wait(0)
        value = self._value
        if value is _MISSING:
            raise AttributeError("Deferred value not available")
        if isinstance(value, TaskFailure):
            raise value
        return value

    def has_value(self) -> bool:
        """True if the value has already been received (no backend call)."""
        return self._value is not _MISSING

    def received(self) -> Any:
        """What was received, without raising: the value or the
        :class:`TaskFailure` (no backend call).

        :raises AttributeError: if nothing was received yet (see :meth:`has_value`).
        """
        value = self._value
        if value is _MISSING:
            raise AttributeError("Deferred value not available")
        return value

    @property
    def status(self) -> str | None:
        """``'success'`` or ``'failed'`` once complete; else the backend's
        status (``'pending'``, ``'scheduled'``, ``'enqueued'``,
        ``'processing'``, or ``None`` for an unknown task), asked again on
        every access."""
        if self.wait(0):
            failed = isinstance(self._value, TaskFailure)
            self._status = "failed" if failed else "success"
        elif self._follow is not None:
            self._status = self._follow.status
        else:
            self._status = self.broker.status(self)
        return self._status

    def wait(self, timeout: float | None) -> bool:
        """Block until the result arrives or ``timeout`` seconds pass.

        Waiting blocks inside the backend (a condition variable for
        ``memory://``), so it wakes as soon as the result is stored.  If the
        task returned a Deferred, waiting continues on that one within the
        same timeout.

        Use this wisely: a task that waits on another task's result can
        deadlock a pool whose workers are all waiting.

        :param timeout: Seconds to wait; ``0`` checks without blocking;
            ``None`` waits indefinitely (dangerous if the worker may vanish).
        :returns: True if the value is available, otherwise False.
        """
        if self._value is not _MISSING:
            return True
        if timeout is not None and timeout < 0:
            raise ValueError("negative timeout not supported")
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            return self._value is not _MISSING
        try:
            while self._value is _MISSING:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                follow = self._follow
                if follow is None:
                    try:
                        value = self.broker.pop_result(self, timeout=remaining)
                    except KeyError:
                        return False
                    except TaskExpired as err:
                        value = err
                else:
                    if not follow.wait(remaining):
                        return False
                    value = follow._value
                if isinstance(value, Deferred):
                    self._follow = value
                else:
                    self._value = value
            return True
        finally:
            self._lock.release()

    def __bool__(self) -> bool:
        """True if the result has arrived (checks without blocking)."""
        return self.wait(0)

    def cancel(self) -> bool:
        """Make sure the task will not complete: True if it was cancelled now.

        A task that is waiting — queued, ``pending`` (for its Deferred
        arguments) or ``scheduled`` (``delay``/``eta``, a retry's back-off)
        — is removed and never runs; a running task's worker process is
        terminated (a thread pool cannot stop a thread: see
        :doc:`/cancel`).  Either way the outcome is a
        :class:`TaskCancelled` at once: this Deferred resolves to it, and
        tasks that take it as an argument follow their ``on_error``.  A
        task that has finished (or is unknown) is not touched: False.  Any
        process can cancel (see :meth:`Broker.cancel
        <poolx.core.Broker.cancel>`).  If the task returned a Deferred,
        that task is cancelled (to see whether it did, a finished task's
        result is read into this Deferred, as ``wait(0)`` would).

        :raises NotImplementedError: if the backend cannot cancel tasks.
        """
        if self._value is not _MISSING:
            return False
        follow = self._follow
        if follow is not None:
            return follow.cancel()
        if self.broker.cancel(self.id):
            return True
        # Finished: its result, unread yet, may be a Deferred to follow.
        self.wait(0)
        follow = self._follow
        return follow.cancel() if follow is not None else False

    def __repr__(self) -> str:
        status = self.status
        if status is None:
            status = "incomplete"
        return f"<Deferred {self.name} [{self.broker.name}:{self.id}] {status}>"

    def __reduce__(self) -> tuple:
        value = () if self._value is _MISSING else (self._value,)
        if self._broker is not None:
            url, queue_name = self._broker.url, self._broker.name
        else:
            assert self._address is not None  # a Deferred has a broker or its address
            url, queue_name = self._address
        args = (url, queue_name, self.id, self.name, value, self._follow)
        if _connector is None:
            return (_restore_deferred, args)
        # The state names the connector (poolx.core.get_broker): a process
        # that unpickles this imports poolx.core, which registers it, before
        # the copy is used.  Older poolx versions set it as an attribute.
        return (_restore_deferred, args, {"connect": _connector})

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Nothing to restore: see :meth:`__reduce__`."""


def _restore_deferred(
    url: str, queue_name: str, task_id: str, name: str, value: tuple, follow: Deferred | None
) -> Deferred:
    """Rebuild a pickled :class:`Deferred`; it connects to a broker for the
    same URL and queue name on first use.  (Stored pickles name this
    function: it keeps its name and arguments.)"""
    result = Deferred(None, FunctionTask(name, (), {}, {"id": task_id}))
    result._address = (url, queue_name)
    if value:
        result._value = value[0]
    result._follow = follow
    return result


restore_deferred = _restore_deferred
"""Public name of the function pickled Deferreds are rebuilt with (the JSON
serializer calls it with the arguments of :meth:`Deferred.__reduce__`)."""


def wait_all(results: Iterable[Deferred], timeout: float | None = None, *,
             progress_bar: ProgressOption = False) -> bool:
    """Wait until every Deferred in ``results`` has its value.

    Same outcome as calling :meth:`Deferred.wait` on each, but the results
    are collected with as few backend calls as the backend allows
    (``redis://`` reads every result that is ready in one round trip).

    :param timeout: Seconds to wait in all; ``None`` waits indefinitely.
    :param progress_bar: ``True``, or a dict of tqdm options, shows a bar
        (on stderr by default) counting the results as they arrive, with
        the failed ones as ``failed=N``; it is closed before this returns.
        The results are then collected in batches (about a hundred for the
        whole bar), so the bar moves as the results come.  Needs the
        ``progress`` extra (:class:`~poolx.exceptions.ExtraNotInstalled`
        otherwise).
    :returns: True if every value arrived in time.
    """
    if timeout is not None and timeout < 0:
        raise ValueError("negative timeout not supported")
    options = progress.check_option(progress_bar)
    deadline = None if timeout is None else time.monotonic() + timeout

    def remaining() -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    if options is None:
        return all(_collect([result for result in results if result._value is _MISSING], remaining))
    results = list(results)
    bar = progress.open_bar(options, len(results), "progress_bar")
    try:
        todo = [result for result in results if result._value is _MISSING]
        items = len(results) - len(todo)
        failed = sum(isinstance(result._value, TaskFailure) for result in results)
        bar.show(items, failed)
        batch = min(max(1, len(todo) // 100), 256)
        arrived = True
        for start in range(0, len(todo), batch):
            part = todo[start : start + batch]
            for result, ok in zip(part, _collect(part, remaining), strict=True):
                if ok:
                    items += 1
                    failed += isinstance(result._value, TaskFailure)
                else:
                    arrived = False
            bar.show(items, failed)
        return arrived
    finally:
        bar.close()


def _collect(todo: list[Deferred], remaining: Callable[[], float | None]) -> list[bool]:
    """:func:`wait_all`'s work for Deferreds without their value yet: whether
    each one's value arrived within ``remaining()`` seconds."""
    # Collect in bulk what nobody else is waiting for: group by broker, each
    # Deferred's lock held while its result is popped.
    locked: list[Deferred] = []
    try:
        groups: dict[int, tuple[Any, dict[str, list[Deferred]]]] = {}
        for result in todo:
            if result._follow is None and result._lock.acquire(blocking=False):
                locked.append(result)
                if result._value is _MISSING:
                    _, by_id = groups.setdefault(id(result.broker), (result.broker, {}))
                    by_id.setdefault(result.id, []).append(result)
        for broker, by_id in groups.values():
            firsts = [deferreds[0] for deferreds in by_id.values()]
            for task_id, value in broker.pop_results(firsts, remaining()).items():
                for result in by_id[task_id]:
                    if isinstance(value, Deferred):
                        result._follow = value
                    else:
                        result._value = value
    finally:
        for result in locked:
            result._lock.release()
    # The rest (timed out, followed, or waited on elsewhere) one by one.
    return [result.wait(remaining()) for result in todo]


class TaskSpace:
    """A namespace of task callables, exposed together with
    :meth:`Broker.expose <poolx.core.Broker.expose>`.

    :param name: Dotted prefix of every task name in this space
        (usually ``__name__``).
    """

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.tasks: dict[str, Callable[..., Any]] = {}

    def task(self, callable: Callable[..., Any], name: str | None = None) -> Callable[..., Any]:
        """Add a task to the namespace.

        Use it as a decorator::

            ts = TaskSpace(__name__)

            @ts.task
            def frob(value):
                db.update(value)

        :param callable: A callable object, usually a function or method.
        :param name: Task name; defaults to ``callable.__name__``.
        :raises ValueError: if the name is already taken in this space.
        """
        if name is None:
            name = callable.__name__
        if self.name:
            name = f"{self.name}.{name}"
        if name in self.tasks:
            raise ValueError(f"task {name!r} conflicts with existing task")
        self.tasks[name] = callable
        return callable

    def __repr__(self) -> str:
        return f"<TaskSpace {self.name!r} {sorted(self.tasks)}>"


class TaskFailure(Exception):
    """A task failed.

    Positional arguments (also available as properties):

    1. task name (:attr:`task_name`)
    2. queue name (:attr:`queue`)
    3. task id (:attr:`task_id`)
    4. error text (:attr:`error`): ``'Type: message'`` or ``'no such task'``

    ``str()`` is ``'NAME [QUEUE:ID] ERROR'``; two failures with the same
    arguments are equal.

    Two attributes beyond WorQ's (poolx), kept by pickling and by the JSON
    serializer:

    :ivar attempts: For a task with a :class:`Retry` policy, how many
        attempts ran (the error text ends with ``(N attempts)`` too); None
        otherwise.
    :ivar retryable: Set by the worker when the task's :class:`Retry` policy
        covers the error (:func:`judge_failure`): the broker then runs the
        task again instead of storing this failure.  False in a stored
        (final) failure.
    """

    attempts: int | None = None
    retryable: bool = False

    @property
    def task_name(self) -> str:
        return self.args[0]

    @property
    def queue(self) -> str:
        return self.args[1]

    @property
    def task_id(self) -> str:
        return self.args[2]

    @property
    def error(self) -> str:
        return self.args[3]

    def __str__(self) -> str:
        if len(self.args) != 4:
            return super().__str__()
        return "{} [{}:{}] {}".format(*self.args)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self}>"

    def replace(self, *, queue: str | None = None, error: str | None = None) -> TaskFailure:
        """A copy of this failure (same type, same :attr:`attempts` and
        :attr:`retryable`) with another queue name or error text."""
        copy = type(self)(self.task_name, self.queue if queue is None else queue, self.task_id,
                          self.error if error is None else error)
        copy.__dict__.update(self.__dict__)
        return copy

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskFailure) and repr(self) == repr(other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(repr(self))


class TaskExpired(TaskFailure):
    """The task's result can no longer arrive (discarded, expired, or the
    worker running it was lost)."""


class DuplicateTask(TaskFailure):
    """A task with the same id is already in the queue."""


CANCELLED_ERROR = "Cancelled: the task was cancelled"
"""The error text of a :class:`TaskCancelled`."""


class TaskCancelled(TaskFailure):
    """The task was cancelled (:meth:`Deferred.cancel`, :meth:`Broker.cancel
    <poolx.core.Broker.cancel>`, ``poolx cancel``) before it completed: it
    never ran, or its worker was terminated.  Recognise it by type; its
    error text is :data:`CANCELLED_ERROR`."""

    def __init__(self, task_name: str, queue: str, task_id: str, error: str = CANCELLED_ERROR) -> None:
        super().__init__(task_name, queue, task_id, error)


_option_properties(Task)
_option_properties(FunctionTask)

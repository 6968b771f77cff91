"""The queue adapter: a :class:`poolx.Pool` consuming a task-queue broker.

Owned here: :class:`BrokerConsumer`, and the two functions that run inside
worker processes, :func:`init_worker` and :func:`run_task`.  The pool stays
the pool (the engine owns workers, timeouts and memory limits); the broker
stays the broker (its backend owns task state).  The consumer owns only the
set of tasks it has *taken* from the queue and not yet answered::

    broker's queue                  the pool's process                              workers
    ──────────────                  ──────────────────                              ───────
    get ──next_task──▶ consumer thread: waits for room, takes a batch,
                       pool.apply_async(run_task, limits) ─────────────────▶ run_task: invoke
                            │ in flight {key: _Running}                                 │
    set_task_timeout ◀──────┤ timer thread: heartbeats (leases) of                      │
    register_pool ◀─────────┤ in-flight tasks; this pool's status                       │
                            │                                                           │
    set_result ◀────────────┴ the pool's callback thread: the outcome ◀── value / error ┘
    requeue_task ◀──          (value, TaskFailure saying what happened,
                               or back to the queue if it never started)

* **The consumer thread** is the only taker.  It waits until fewer tasks
  are in flight than the pool has workers (plus a small prefetch for tiny
  tasks, see :attr:`BrokerConsumer.capacity`), then blocks in
  ``broker.next_task(timeout)`` and, once one task arrived, takes more
  without blocking while there is room: a burst of idle workers is filled
  in one go.  Each task goes to the pool with its own ``timeout``,
  ``soft_timeout`` and ``memory_limit`` options.
* **The pool's callback thread** writes every outcome back through *this*
  process's broker (which is what lets ``memory://`` work with a process
  pool): the value, or a :class:`~poolx.task.TaskFailure` whose text says
  what happened — the task's exception, ``SoftTimeLimitExceeded``,
  ``TimeLimitExceeded``, ``MemoryLimitExceeded``, a lost worker
  (:class:`~poolx.task.TaskExpired`, as WorQ reports it) or ``Terminated``.
  Tasks that never started — the pool was terminated or broke first — are
  handed back with the backend's ``requeue_task`` instead of failing.
* **The timer thread** renews the heartbeat (the Redis lease) of every task
  in flight every ``task.heartrate`` seconds, and publishes this pool's
  status for ``poolx status`` every ``status_interval`` seconds.

Tasks run in workers in one of two ways.  By default the consumer sends the
callable that *this* process's broker exposes along with the task (so any
``poolx.Pool`` can consume any broker).  With ``worker_broker=True`` the pool's
initializer is :func:`init_worker`, which builds a broker in each worker
(WorQ's ``init_func(url)``), and workers invoke tasks on that broker — what
:class:`poolx.pool.process.WorkerPool` does.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import uuid4

from poolx.engine import pickling
from poolx.exceptions import (
    BrokenPoolError,
    MemoryLimitExceeded,
    RestartFreqExceeded,
    SoftTimeLimitExceeded,
    Terminated,
    TimeLimitExceeded,
    WorkerLostError,
)
from poolx.queue.urls import redact_url
from poolx.task import FunctionTask, TaskExpired, TaskFailure

__all__ = ["BrokerConsumer", "init_worker", "run_task"]

log = logging.getLogger(__name__)

PREFETCH_WINDOW = 0.05
"""Seconds of predicted work each worker may hold ahead of the task it runs:
tasks that take longer on average are never prefetched, and a burst of tiny
tasks is taken in batches (one backend call for many tasks)."""
PREFETCH_MAX = 64
"""At most this many extra tasks per worker are taken ahead."""
STATUS_INTERVAL = 5.0
"""Default seconds between two status heartbeats in the pool registry."""
MAX_BACKOFF = 5.0
"""Longest wait (seconds) before asking a failing broker for tasks again."""

_POOL_TERMINATED = ("pool terminated",)
_NOT_RUNNING = "Pool not running"


# -- inside worker processes -----------------------------------------------------

_worker_broker: Any = None
"""The broker :func:`init_worker` built in *this* worker process (worker-local)."""


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

    def __init__(self, queue: str, name: str, func: Callable[..., Any]) -> None:
        self.name = queue
        self.tasks = {name: func}


def run_task(task: FunctionTask, func: Callable[..., Any] | None, queue: str) -> tuple[Any, float]:
    """Run one task in a worker; return ``(outcome, seconds it ran)``.

    The outcome is the task's value, or a :class:`~poolx.task.TaskFailure`
    (an exception in the task, an unknown task name).  With ``func`` None the
    task is invoked on the broker :func:`init_worker` built; otherwise
    ``func`` is the callable the consumer's broker exposes under that name.
    """
    started = time.perf_counter()
    if func is None:
        broker = _worker_broker
        if broker is None:
            raise RuntimeError("no worker broker: the pool's initializer must be poolx.consumer.init_worker")
        outcome = broker.invoke(task, return_result=True)
    else:
        outcome = task.invoke(_OneTask(queue, task.name, func), return_result=True)  # type: ignore[arg-type]
    return outcome, time.perf_counter() - started


# -- in the pool's process ---------------------------------------------------------


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:g} s"


# What a task that did not catch the engine's SoftTimeLimitExceeded fails with.
_SOFT_LIMIT_TEXTS = frozenset([
    "SoftTimeLimitExceeded: ",
    f"SoftTimeLimitExceeded: {SoftTimeLimitExceeded()}",
])


def _soft_limit_text(task: FunctionTask) -> str:
    limit = f" ({task.soft_timeout:g} s)" if task.soft_timeout is not None else ""
    return f"SoftTimeLimitExceeded: soft time limit{limit} exceeded"


class _Running:
    """One task taken from the queue and not answered yet."""

    __slots__ = ("consumer", "key", "task", "result", "due")

    def __init__(self, consumer: BrokerConsumer, key: int, task: FunctionTask, due: float) -> None:
        self.consumer = consumer
        self.key = key
        self.task = task
        self.result: Any = None  # the pool's ApplyResult
        self.due = due  # next heartbeat (monotonic clock)

    def done(self, value: tuple[Any, float]) -> None:
        """Pool callback: the worker returned ``(outcome, seconds)``."""
        self.consumer._finished(self, value[0], value[1])

    def failed(self, error: BaseException) -> None:
        """Pool error callback: the job failed in the pool (timeout, lost...)."""
        self.consumer._pool_error(self, error)

    def worker_pid(self) -> int | None:
        pids = self.result.worker_pids() if self.result is not None else []
        return pids[0] if pids else None

    def describe(self) -> str:
        task = self.task
        return f"{task.name} [{self.consumer.broker.name}:{task.id}]"


class BrokerConsumer:
    """Make a :class:`poolx.Pool` run the tasks of a broker's queue.

    ::

        pool = poolx.Pool(4, timeout=300)
        consumer = BrokerConsumer(pool, broker)   # broker exposes the tasks
        consumer.start()
        ...
        consumer.stop()        # running tasks finish, results are stored
        pool.close(); pool.join()

    :param pool: The pool that runs the tasks (the consumer never closes it).
    :param broker: The :class:`~poolx.core.Broker` whose queue is consumed;
        results are stored through it, in this process.
    :param timeout: Seconds one ``next_task`` call blocks waiting for a task.
        A stop request is seen when it returns, so it bounds how long
        :meth:`stop` waits while the queue is empty.
    :param prefetch: Tasks each worker may hold ahead of the one it runs.
        ``None`` (the default) adapts to the mean run time of recent tasks:
        as many as fit in :data:`PREFETCH_WINDOW` seconds (at most
        :data:`PREFETCH_MAX`), none for tasks longer than that, so a long
        task never keeps another waiting while a worker elsewhere is idle.
    :param worker_broker: If true, the pool's initializer is
        :func:`init_worker` and workers invoke tasks on their own broker;
        otherwise the callable this broker exposes is sent with each task.
    :param name: Shown in logs and ``poolx status`` (default: the queue name).
    :param register: Publish this pool's status in the backend's pool
        registry (``poolx status``) every ``status_interval`` seconds; it
        expires after three intervals without news.
    :param status_interval: See ``register``.
    :param on_broken: Called (no arguments) once when the pool turns out to
        be broken and the consumer stops taking tasks.
    """

    def __init__(
        self,
        pool: Any,
        broker: Any,
        *,
        timeout: float = 1.0,
        prefetch: int | None = None,
        worker_broker: bool = False,
        name: str | None = None,
        register: bool = True,
        status_interval: float = STATUS_INTERVAL,
        on_broken: Callable[[], Any] | None = None,
    ) -> None:
        if not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout >= 0):
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        if prefetch is not None and (not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 0):
            raise ValueError(f"prefetch must be None or an int >= 0, got {prefetch!r}")
        if not status_interval > 0:
            raise ValueError(f"status_interval must be positive, got {status_interval!r}")
        self.pool = pool
        self.broker = broker
        self.timeout = float(timeout)
        self.prefetch = prefetch
        self.worker_broker = worker_broker
        self.name = name or broker.name
        self.register = register
        self.status_interval = float(status_interval)
        self.on_broken = on_broken
        self.pool_id = f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:12]}"

        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)  # consumer waits for room / stop waits for drain
        self._timer = threading.Condition(self._lock)  # timer thread waits for its next deadline
        self._running: dict[int, _Running] = {}
        self._keys = itertools.count()
        self._waiting_for_space = False
        self._in_get = False  # the consumer thread is blocked waiting for a task
        self._consumer_done = False
        self._timer_wake: float | None = None
        self._stopping = False
        self._closed = False
        self._started = False
        self._thread: threading.Thread | None = None
        self._timer_thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._ewma: float | None = None  # mean run time of recent tasks
        self._started_keys: set[int] | None = None  # snapshot taken when the pool terminates
        self.broken: BaseException | None = None
        self.started_at: float | None = None
        self.stats: dict[str, int] = dict.fromkeys(("taken", "done", "failed", "requeued"), 0)

    # -- life cycle -------------------------------------------------------------

    def start(self) -> None:
        """Start the consumer and timer threads and return.

        :raises RuntimeError: if it was started before.
        """
        with self._lock:
            if self._started:
                raise RuntimeError("a BrokerConsumer can only be started once")
            self._started = True
        self.started_at = time.time()
        self._publish_status()  # visible to ``poolx status`` from the start
        self._timer_thread = threading.Thread(target=self._timer_loop, name="poolx-consumer-timer", daemon=True)
        self._thread = threading.Thread(target=self._consume, name="poolx-consumer", daemon=True)
        self._timer_thread.start()
        self._thread.start()

    def stop(self, join: bool = True) -> None:
        """Stop taking tasks; with ``join``, wait until every task in flight
        has its outcome stored (see :meth:`join`).

        Tasks already handed to the pool finish (the pool is not touched);
        a task the consumer takes after this call is returned to the queue.
        """
        with self._lock:
            self._stopping = True
            self._space.notify_all()
        self._stop_event.set()
        if join:
            self.join()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no more tasks are taken and every task in flight is
        answered (call :meth:`stop` first); then unregister from the pool
        registry.  Returns whether all that happened within ``timeout``.

        A consumer thread still blocked waiting for a task is not waited
        for: it hands back anything it receives and ends by itself.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            # A consumer thread blocked in next_task is not waited for: it
            # returns whatever it takes from now on to the queue (and ends
            # within ``timeout`` seconds of this class's constructor).
            while self._thread is not None and not (self._consumer_done or self._in_get):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._space.wait(remaining)
            while self._running:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._space.wait(remaining)
            first = not self._closed
            self._closed = True
            self._timer.notify_all()
        timer = self._timer_thread
        if timer is not None:
            timer.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if first and self.register and self._started:
            self._unregister()
        return True

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._started and not self._stopping

    @property
    def in_flight(self) -> int:
        """Tasks taken and not answered yet."""
        return len(self._running)

    @property
    def capacity(self) -> int:
        """How many tasks may be in flight: one per worker, plus the prefetch."""
        workers = max(1, self.pool._processes)
        prefetch = self.prefetch
        if prefetch is None:
            ewma = self._ewma
            prefetch = 0 if ewma is None else min(PREFETCH_MAX, int(PREFETCH_WINDOW / max(ewma, 1e-6)))
        return workers * (1 + prefetch)

    # -- the consumer thread ----------------------------------------------------

    def _consume(self) -> None:
        failures = 0
        while True:
            with self._lock:
                while not self._stopping and len(self._running) >= self.capacity:
                    self._waiting_for_space = True
                    self._space.wait()
                self._waiting_for_space = False
                if self._stopping:
                    break
                room = self.capacity - len(self._running)
                self._in_get = True
            try:
                try:
                    tasks = self._next_tasks(room)
                finally:
                    with self._lock:
                        self._in_get = False
                if tasks:
                    failures = 0
                for task in tasks:
                    self._take(task)
            except Exception:
                failures += 1
                delay = min(0.05 * 2 ** min(failures, 10), MAX_BACKOFF)
                log.error("%s: cannot take tasks from %s (retrying in %.2f s)",
                          self.name, redact_url(self.broker.url), delay, exc_info=True)
                if self._stop_event.wait(delay):
                    break
        with self._lock:
            self._consumer_done = True
            self._space.notify_all()
        log.debug("%s: consumer stopped", self.name)

    def _next_tasks(self, room: int) -> list[FunctionTask]:
        """Block up to ``timeout`` for one task, then take what is ready, up
        to ``room`` tasks (one backend call when the broker can batch)."""
        broker = self.broker
        next_tasks = getattr(broker, "next_tasks", None)
        if next_tasks is not None:
            return next_tasks(room, timeout=self.timeout)
        tasks = []
        task = broker.next_task(timeout=self.timeout)
        while task is not None:
            tasks.append(task)
            if len(tasks) >= room:
                break
            task = broker.next_task(timeout=0)
        return tasks

    def _take(self, task: FunctionTask) -> None:
        """Hand one task that was just taken to the pool (or give it back)."""
        self.stats["taken"] += 1
        if self._stopping or self.broken is not None:
            self._requeue(task, "the consumer is stopping")
            return
        func = None
        if not self.worker_broker:
            func = self.broker.tasks.get(task.name)
            if func is None:
                self._store(task, TaskFailure(task.name, self.broker.name, task.id, "no such task"))
                return
            func = pickling.portable(func)
        key = next(self._keys)
        entry = _Running(self, key, task, time.monotonic() + task.heartrate)
        with self._lock:
            self._running[key] = entry
            wake = self._timer_wake
            if wake is None or entry.due < wake:
                self._timer.notify()
        try:
            entry.result = self.pool.apply_async(
                run_task,
                (task, func, self.broker.name),
                callback=entry.done,
                error_callback=entry.failed,
                soft_timeout=task.soft_timeout,
                timeout=task.timeout,
                memory_limit=task.memory_limit,
            )
        except ValueError as err:  # the pool is closed or terminated
            self._forget(entry)
            self._requeue(task, f"the pool is not running ({err})")
            if not self._stopping:
                self._set_broken(BrokenPoolError(f"the pool is not running: {err}"))

    # -- outcomes (on the pool's callback thread) --------------------------------

    def _finished(self, entry: _Running, outcome: Any, seconds: float) -> None:
        ewma = self._ewma
        self._ewma = seconds if ewma is None else ewma * 0.8 + seconds * 0.2
        task = entry.task
        if isinstance(outcome, TaskFailure):
            if outcome.task_id == task.id and outcome.queue != self.broker.name:
                # the worker's broker may serve another queue name: say which one ran it
                outcome = type(outcome)(outcome.task_name, self.broker.name, task.id, outcome.error)
            if outcome.error in _SOFT_LIMIT_TEXTS:  # the engine's signal, not the task's own raise
                outcome = type(outcome)(outcome.task_name, outcome.queue, task.id, _soft_limit_text(task))
        self._store(task, outcome)
        self._forget(entry)

    def _pool_error(self, entry: _Running, error: BaseException) -> None:
        task = entry.task
        queue = self.broker.name
        if isinstance(error, (BrokenPoolError, RestartFreqExceeded)):
            # the job never ran: the pool could not run anything
            self._requeue(task, f"the pool is broken ({error})")
            self._forget(entry)
            self._set_broken(error)
            return
        if isinstance(error, Terminated) and error.args == _POOL_TERMINATED:
            started = error.started  # the pool knows; infer only if it does not say
            if started is None:
                started = entry.key in self._started_snapshot()
            if not started:
                self._requeue(task, "the pool was terminated before the task started")
                self._forget(entry)
                return
            failure = TaskFailure(task.name, queue, task.id,
                                  "Terminated: the worker pool was stopped while the task ran")
        elif isinstance(error, Terminated):
            sig = f" (signal {error.args[0]})" if error.args else ""
            failure = TaskFailure(task.name, queue, task.id, f"Terminated: the task was terminated{sig}")
        elif isinstance(error, TimeLimitExceeded):
            failure = TaskFailure(task.name, queue, task.id,
                                  f"TimeLimitExceeded: hard time limit ({_seconds(task.timeout or _pool_limit(error))}) "
                                  "exceeded; the worker was killed")
        elif isinstance(error, SoftTimeLimitExceeded):
            failure = TaskFailure(task.name, queue, task.id, _soft_limit_text(task))
        elif isinstance(error, MemoryLimitExceeded):
            failure = TaskFailure(task.name, queue, task.id, _error_text(error))
        elif isinstance(error, WorkerLostError):
            # WorQ reports a dead worker as TaskExpired; say why as well
            failure = TaskExpired(task.name, queue, task.id, f"WorkerLostError: {error}")
        else:  # e.g. a result the worker could not send back
            failure = TaskFailure(task.name, queue, task.id, _error_text(error))
        self._store(task, failure)
        self._forget(entry)

    def _started_snapshot(self) -> set[int]:
        """Which tasks in flight had started when the pool was terminated.

        Taken once, at the first ``Terminated`` outcome: by then every job
        that completed earlier has been answered (callbacks run in order), so
        the oldest task sent to each worker is the one it was running; the
        others were prefetched and had not started.
        """
        with self._lock:
            if self._started_keys is None:
                first: dict[int, int] = {}
                for key in sorted(self._running):
                    pid = self._running[key].worker_pid()
                    if pid is not None and pid not in first:
                        first[pid] = key
                self._started_keys = set(first.values())
            return self._started_keys

    def _store(self, task: FunctionTask, outcome: Any) -> None:
        key = "failed" if isinstance(outcome, TaskFailure) else "done"
        with self._lock:  # outcomes are stored from the callback and consumer threads
            self.stats[key] += 1
        if key == "failed":
            log.error("task failed: %s", outcome)
        try:
            self.broker.set_result(task, outcome)
        except Exception:
            log.error("%s: cannot store the result of %s [%s:%s]", self.name,
                      task.name, self.broker.name, task.id, exc_info=True)

    def _requeue(self, task: FunctionTask, why: str) -> None:
        """Return a task that never started to the queue (or fail it clearly)."""
        queue = self.broker.taskqueue
        try:
            message, args = self.broker.serialize(task, deferred=True)
            if args:
                raise ValueError("its arguments still hold Deferred results")
            if queue.requeue_task(task.id, message, task.ignore_result):
                with self._lock:
                    self.stats["requeued"] += 1
                log.info("returned %s [%s:%s] to the queue: %s", task.name, self.broker.name, task.id, why)
            else:
                log.debug("not requeued (no longer processing): %s [%s:%s]", task.name, self.broker.name, task.id)
            return
        except NotImplementedError:
            reason = f"{why}, and the {type(queue).__module__} backend cannot requeue tasks"
        except Exception as err:
            reason = f"{why}, and it could not be requeued: {_error_text(err)}"
        self._store(task, TaskFailure(task.name, self.broker.name, task.id, f"not run: {reason}"))

    def _forget(self, entry: _Running) -> None:
        with self._lock:
            self._running.pop(entry.key, None)
            running = len(self._running)
            if self._stopping:
                if not running:
                    self._space.notify_all()
            elif self._waiting_for_space and running <= self.capacity // 2:
                self._space.notify()

    def _set_broken(self, error: BaseException) -> None:
        with self._lock:
            if self.broken is not None:
                return
            self.broken = error
            self._stopping = True
            self._space.notify_all()
        self._stop_event.set()
        log.error("%s: the pool cannot run tasks, no more are taken: %s", self.name, error)
        if self.on_broken is not None:
            try:
                self.on_broken()
            except Exception:
                log.error("%s: on_broken callback failed", self.name, exc_info=True)

    def check_pool(self) -> None:
        """Stop taking tasks if the pool has broken (e.g. every worker's
        initializer fails).  Called by the timer thread; safe from any thread
        but the pool's own supervisor."""
        broken = self.pool.broken
        if broken is not None:
            self._set_broken(broken)

    # -- the timer thread: heartbeats and status --------------------------------

    def _timer_loop(self) -> None:
        next_status = time.monotonic() + self.status_interval
        cond = self._timer
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                due = [entry for entry in self._running.values() if entry.due <= now]
                status_due = now >= next_status
                if not due and not status_due:
                    wake = min((entry.due for entry in self._running.values()), default=next_status)
                    wake = min(wake, next_status)
                    self._timer_wake = wake
                    cond.wait(max(0.0, wake - now))
                    self._timer_wake = None
                    continue
                for entry in due:
                    entry.due = now + entry.task.heartrate
                if status_due:
                    next_status = now + self.status_interval
                self._lock.release()
                try:
                    for entry in due:
                        try:
                            self.broker.heartbeat(entry.task)
                        except Exception:
                            log.error("%s: heartbeat failed for %s", self.name, entry.describe(), exc_info=True)
                    if status_due:
                        self._publish_status()
                finally:
                    self._lock.acquire()

    def _publish_status(self) -> None:
        try:
            self.check_pool()
        except Exception:
            log.debug("%s: cannot check the pool", self.name, exc_info=True)
        if not self.register:
            return
        try:
            info = json.dumps(self.info(), default=str)
            self.broker.taskqueue.register_pool(self.pool_id, info, self.status_interval * 3)
        except NotImplementedError:
            log.debug("%s: this backend has no pool registry", self.name)
            self.register = False
        except Exception:
            log.error("%s: cannot publish the pool status", self.name, exc_info=True)

    def _unregister(self) -> None:
        try:
            self.broker.taskqueue.unregister_pool(self.pool_id)
        except NotImplementedError:
            pass
        except Exception:
            log.error("%s: cannot unregister from the pool registry", self.name, exc_info=True)

    def info(self) -> dict[str, Any]:
        """This pool's status, as ``poolx status`` shows it."""
        with self._lock:
            running = sorted(self._running.values(), key=lambda entry: entry.key)
        by_pid: dict[int, _Running] = {}
        for entry in running:
            pid = entry.worker_pid()
            if pid is not None:
                by_pid.setdefault(pid, entry)
        try:
            stats = self.pool.stats()
        except Exception:
            stats = {"workers": [], "broken": None}
        workers = []
        for worker in stats.get("workers", []):
            entry = by_pid.get(worker["pid"])
            workers.append({
                "pid": worker["pid"],
                "state": worker["state"],
                "task": entry.describe() if entry is not None and worker["state"] == "busy" else None,
                "tasks_done": worker.get("tasks_done"),
                "rss": worker.get("rss"),
                "uptime": worker.get("uptime"),
            })
        broken = self.broken if self.broken is not None else stats.get("broken")
        return {
            "id": self.pool_id,
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "url": redact_url(self.broker.url),
            "queue": self.broker.name,
            "state": "broken" if broken else ("stopping" if self._stopping else "running"),
            "broken": None if broken is None else str(broken),
            "started": self.started_at,
            "heartbeat": time.time(),
            "workers": workers,
            "tasks_done": self.stats["done"],
            "tasks_failed": self.stats["failed"],
            "tasks_requeued": self.stats["requeued"],
            "in_flight": [entry.describe() for entry in running],
        }

    def __repr__(self) -> str:
        state = "running" if self.running else ("stopped" if self._closed else "stopping" if self._started else "new")
        return f"<BrokerConsumer {self.name} {state} in_flight={self.in_flight}>"


def _pool_limit(error: TimeLimitExceeded) -> float | None:
    value = error.args[0] if error.args else None
    return value if isinstance(value, (int, float)) else None

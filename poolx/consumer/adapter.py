"""The consumer's life cycle: a :class:`poolx.Pool` consuming a broker (layer L6).

Owned here: :class:`BrokerConsumer` — its state (the tasks it has *taken*
from the queue and not yet answered, whether it is running, stopping or
broken), carrying out what :mod:`poolx.consumer.outcomes` decides for each
answer, and the pool's status for ``poolx status``.  Its helpers, each in
its own module: the intake thread (:mod:`poolx.consumer.intake`), the
heartbeat thread (:mod:`poolx.consumer.heartbeats`, which also publishes the
status every ``status_interval`` seconds), and what runs in the workers
(:mod:`poolx.consumer.inworker`).

It talks to the engine only through the pool's public API (``apply_async``
with limits, result objects, ``stats()``, ``broken``) and to the queue only
through the broker (and its backend's ``requeue_task`` and pool registry).

Threads: the intake thread takes tasks (:meth:`BrokerConsumer.track`); the
pool's callback thread answers them (:meth:`BrokerConsumer.settle`); the
heartbeat thread renews leases and publishes the status; the caller's
thread starts and stops.  One lock guards the in-flight table and the flags.
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

from poolx.checks import MovingAverage, check_count, check_seconds, prefetch_depth
from poolx.consumer import PREFETCH_MAX, PREFETCH_WINDOW, STATUS_INTERVAL, outcomes
from poolx.consumer.heartbeats import Heartbeats
from poolx.consumer.intake import Intake
from poolx.queue.urls import redact_url
from poolx.task import FunctionTask, TaskFailure, error_text

__all__ = ["BrokerConsumer", "InFlight"]

log = logging.getLogger("poolx.consumer")


class InFlight:
    """One task taken from the queue and not answered yet."""

    __slots__ = ("consumer", "key", "task", "result", "beat")

    def __init__(self, consumer: BrokerConsumer, key: int, task: FunctionTask, beat: int) -> None:
        self.consumer = consumer
        self.key = key
        self.task = task
        self.result: Any = None  # the pool's ApplyResult
        self.beat = beat  # its key in the heartbeat table

    def done(self, value: tuple[Any, float]) -> None:
        """Pool callback: the worker returned ``(outcome, seconds)``."""
        self.consumer.finished(self, value[0], value[1])

    def failed(self, error: BaseException) -> None:
        """Pool error callback: the job failed in the pool (timeout, lost...)."""
        consumer = self.consumer
        consumer.settle(self, outcomes.from_pool_error(self.task, consumer.broker.name, error))

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
        :func:`~poolx.consumer.init_worker` and workers invoke tasks on their
        own broker; otherwise the callable this broker exposes is sent with
        each task.
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
        timeout = check_seconds("timeout", timeout, allow_none=False, allow_zero=True)  # type: ignore[assignment]
        self.prefetch = check_count("prefetch", prefetch, 0, allow_none=True)
        self.status_interval: float = check_seconds("status_interval", status_interval,
                                                    allow_none=False)  # type: ignore[assignment]
        self.pool = pool
        self.broker = broker
        self.timeout = timeout
        self.worker_broker = worker_broker
        self.name = name or broker.name
        self.register = register
        self.on_broken = on_broken
        self.pool_id = f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:12]}"
        self.run_time = MovingAverage()
        """Mean run time (seconds) of recent tasks, which prefetching follows."""
        self.stop_requested = threading.Event()
        """Set once :meth:`stop` was called or the pool broke."""
        self.broken: BaseException | None = None
        self.started_at: float | None = None
        self.stats: dict[str, int] = dict.fromkeys(("taken", "done", "failed", "requeued"), 0)

        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # intake waits for room, join for the drain
        self._in_flight: dict[int, InFlight] = {}
        self._keys = itertools.count()
        self._waiting_for_room = False
        self._stopping = False
        self._closed = False
        self._started = False
        self._workers = 1
        self._read_pool()
        self._heartbeats = Heartbeats(self._heartbeat, label=self.name, tick=self._publish_status,
                                      tick_interval=self.status_interval)
        self._heartbeat_thread: threading.Thread | None = None
        self._intake = Intake(self, self.timeout)

    # -- life cycle -------------------------------------------------------------

    def start(self) -> None:
        """Start the intake and heartbeat threads and return.

        :raises RuntimeError: if it was started before.
        """
        with self._lock:
            if self._started:
                raise RuntimeError("a BrokerConsumer can only be started once")
            self._started = True
        self.started_at = time.time()
        self._publish_status()  # visible to ``poolx status`` from the start
        self._heartbeat_thread = threading.Thread(target=self._heartbeats.run,
                                                  name="poolx-consumer-heartbeat", daemon=True)
        self._heartbeat_thread.start()
        self._intake.start()

    def stop(self, join: bool = True) -> None:
        """Stop taking tasks; with ``join``, wait until every task in flight
        has its outcome stored (see :meth:`join`).

        Tasks already handed to the pool finish (the pool is not touched);
        a task the consumer takes after this call is returned to the queue.
        """
        with self._lock:
            self._stopping = True
            self._room.notify_all()
        self.stop_requested.set()
        if join:
            self.join()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no more tasks are taken and every task in flight is
        answered (call :meth:`stop` first); then unregister from the pool
        registry.  Returns whether all that happened within ``timeout``.

        An intake thread still blocked waiting for a task is not waited
        for: it hands back anything it receives and ends by itself (within
        the consumer's ``timeout``).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._intake.wait_parked(deadline):
            return False
        with self._lock:
            while self._in_flight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._room.wait(remaining)
            first = not self._closed
            self._closed = True
        self._heartbeats.close()
        thread = self._heartbeat_thread
        if thread is not None:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if first and self.register and self._started:
            self._unregister()
        return True

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._started and not self._stopping

    @property
    def accepting(self) -> bool:
        """True while taken tasks go to the pool (not stopping, not broken)."""
        return not self._stopping and self.broken is None

    @property
    def taking(self) -> bool:
        """True while the intake thread is blocked waiting for a task."""
        return self._intake.waiting

    @property
    def in_flight(self) -> int:
        """Tasks taken and not answered yet."""
        return len(self._in_flight)

    @property
    def capacity(self) -> int:
        """How many tasks may be in flight: one per worker, plus the prefetch."""
        prefetch = self.prefetch
        if prefetch is None:
            prefetch = prefetch_depth(self.run_time.value, PREFETCH_WINDOW, PREFETCH_MAX)
        return max(1, self._workers) * (1 + prefetch)

    # -- the intake thread's side -------------------------------------------------

    def wait_for_room(self) -> int | None:
        """Block until fewer tasks are in flight than :attr:`capacity`;
        return how many more may be taken, or None once stopping."""
        with self._lock:
            while not self._stopping and len(self._in_flight) >= self.capacity:
                self._waiting_for_room = True
                self._room.wait()
            self._waiting_for_room = False
            if self._stopping:
                return None
            return self.capacity - len(self._in_flight)

    def track(self, task: FunctionTask) -> InFlight:
        """A task goes to the pool: keep it in flight, with heartbeats."""
        entry = InFlight(self, next(self._keys), task, self._heartbeats.add(task))
        with self._lock:
            self._in_flight[entry.key] = entry
        return entry

    def count(self, what: str) -> None:
        with self._lock:
            self.stats[what] += 1

    # -- outcomes (on the pool's callback thread) --------------------------------

    def finished(self, entry: InFlight, value: Any, seconds: float) -> None:
        """The worker returned ``value`` after running ``seconds``.

        :param entry: The task in flight.
        :param value: What the worker returned (a value or a TaskFailure).
        :param seconds: How long the task ran.
        """
        self.run_time.add(seconds)
        self.settle(entry, outcomes.from_worker(entry.task, self.broker.name, value))

    def settle(self, entry: InFlight, outcome: outcomes.Outcome) -> None:
        """Carry out ``outcome`` for a task in flight, which leaves the table.

        :param entry: The task in flight.
        :param outcome: What to do: store a value, or give the task back.
        """
        task = entry.task
        if isinstance(outcome, outcomes.GiveBack):
            self.give_back(task, outcome.why)
        else:
            self.store(task, outcome.value)
        self._untrack(entry)
        if isinstance(outcome, outcomes.GiveBack) and outcome.broken is not None:
            self._set_broken(outcome.broken)

    def store(self, task: FunctionTask, value: Any) -> None:
        """Store a task's result (or failure) through this process's broker.

        :param task: The task.
        :param value: Its result, or a TaskFailure.
        """
        failed = isinstance(value, TaskFailure)
        self.count("failed" if failed else "done")
        if failed:
            log.error("task failed: %s", value)
        try:
            self.broker.set_result(task, value)
        except Exception:
            log.error("%s: cannot store the result of %s [%s:%s]", self.name,
                      task.name, self.broker.name, task.id, exc_info=True)

    def give_back(self, task: FunctionTask, why: str) -> None:
        """Return a task that never started to the queue (or fail it clearly).

        :param task: The task, which never started.
        :param why: Why it goes back (logged).
        """
        queue_name = self.broker.name
        taskqueue = self.broker.taskqueue
        try:
            message, args = self.broker.serialize(task, deferred=True)
            if args:
                raise ValueError("its arguments still hold Deferred results")
            if taskqueue.requeue_task(task.id, message, task.ignore_result):
                self.count("requeued")
                log.info("returned %s [%s:%s] to the queue: %s", task.name, queue_name, task.id, why)
            else:
                log.debug("not requeued (no longer processing): %s [%s:%s]",
                          task.name, queue_name, task.id)
            return
        except NotImplementedError:
            reason = f"{why}, and the {type(taskqueue).__module__} backend cannot requeue tasks"
        except Exception as err:
            reason = f"{why}, and it could not be requeued: {error_text(err)}"
        self.store(task, TaskFailure(task.name, queue_name, task.id, f"not run: {reason}"))

    def _untrack(self, entry: InFlight) -> None:
        self._heartbeats.discard(entry.beat)
        with self._lock:
            self._in_flight.pop(entry.key, None)
            left = len(self._in_flight)
            if self._stopping:
                if not left:
                    self._room.notify_all()
            elif self._waiting_for_room and left <= self.capacity // 2:
                self._room.notify()

    def _set_broken(self, error: BaseException) -> None:
        with self._lock:
            if self.broken is not None:
                return
            self.broken = error
            self._stopping = True
            self._room.notify_all()
        self.stop_requested.set()
        log.error("%s: the pool cannot run tasks, no more are taken: %s", self.name, error)
        if self.on_broken is not None:
            try:
                self.on_broken()
            except Exception:
                log.error("%s: on_broken callback failed", self.name, exc_info=True)

    def check_pool(self) -> None:
        """Stop taking tasks if the pool has broken (e.g. every worker's
        initializer fails).  Called on every status tick; safe from any
        thread but the pool's own supervisor."""
        broken = self.pool.broken
        if broken is not None:
            self._set_broken(broken)

    # -- heartbeats and status (on the heartbeat thread) ------------------------

    def _heartbeat(self, task: FunctionTask) -> None:
        self.broker.heartbeat(task)

    def _read_pool(self) -> dict[str, Any]:
        """The pool's ``stats()``; keeps its worker count for :attr:`capacity`."""
        try:
            stats = self.pool.stats()
        except Exception:
            log.debug("%s: cannot read the pool's stats", self.name, exc_info=True)
            return {"workers": [], "broken": None}
        processes = stats.get("processes")
        if isinstance(processes, int):
            self._workers = processes
        return stats

    def _publish_status(self) -> None:
        try:
            self.check_pool()
        except Exception:
            log.debug("%s: cannot check the pool", self.name, exc_info=True)
        stats = self._read_pool()
        if not self.register:
            return
        try:
            info = json.dumps(self._info(stats), default=str)
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
        return self._info(self._read_pool())

    def _info(self, stats: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            running = sorted(self._in_flight.values(), key=lambda entry: entry.key)
        by_pid: dict[int, InFlight] = {}
        for entry in running:
            pid = entry.worker_pid()
            if pid is not None:
                by_pid.setdefault(pid, entry)
        workers = []
        for worker in stats.get("workers", []):
            held = by_pid.get(worker["pid"])
            workers.append({
                "pid": worker["pid"],
                "state": worker["state"],
                "task": held.describe() if held is not None and worker["state"] == "busy" else None,
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
        if self.running:
            state = "running"
        else:
            state = "stopped" if self._closed else "stopping" if self._started else "new"
        return f"<BrokerConsumer {self.name} {state} in_flight={self.in_flight}>"

"""The consumer's life cycle: a :class:`poolx.Pool` consuming a broker (layer L6).

Owned here: :class:`BrokerConsumer` — its state (the tasks it has *taken*
from the queue and not yet answered, whether it is running, stopping or
broken), carrying out what :mod:`poolx.consumer.outcomes` decides for each
answer, the pool's status for ``poolx status`` (with its recent failures, a
:class:`~poolx.consumer.failures.RecentFailures`), and the per-task-name
counts (a :class:`~poolx.tally.TaskTally`) that :meth:`BrokerConsumer.snapshot`
gives the metrics (:mod:`poolx.metrics`).  Its helpers, each in
its own module: the intake thread (:mod:`poolx.consumer.intake`), the
heartbeat thread (:mod:`poolx.consumer.heartbeats`, which also publishes the
status every ``status_interval`` seconds), the watcher of cancelled tasks
(:mod:`poolx.consumer.cancels`), the answer thread
(:mod:`poolx.consumer.answers`), and what runs in the workers
(:mod:`poolx.consumer.inworker`).

It talks to the engine only through the pool's public API (``submit_jobs``
with limits, a batch per call, each task in flight being its job's
:class:`~poolx.engine.results.JobSink`; ``terminate_job``, ``stats()``,
``broken``) and to the queue only through the broker (and its backend's
``requeue_task`` and pool registry).

Threads: the intake thread takes tasks (:meth:`BrokerConsumer.track_all`);
the answer thread settles the pool's answers in batches
(:meth:`BrokerConsumer.settle_answers`); the
heartbeat thread renews leases and publishes the status; the watcher
stops cancelled tasks (:meth:`BrokerConsumer.stop_cancelled`); the caller's
thread starts and stops.  One lock guards the in-flight table and the flags.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import uuid4

from poolx.checks import MovingAverage, check_count, check_seconds, prefetch_depth
from poolx.consumer import (
    GIVE_BACK_AFTER,
    PREFETCH_MAX,
    PREFETCH_WINDOW,
    STATUS_INTERVAL,
    STOP_RETRY_TIMEOUT,
    log_failure,
    outcomes,
)
from poolx.consumer.answers import Answers
from poolx.consumer.cancels import CancelWatch
from poolx.consumer.failures import RecentFailures
from poolx.consumer.heartbeats import Heartbeats
from poolx.consumer.intake import Intake
from poolx.consumer.inworker import SECONDS, run_task
from poolx.engine.results import BaseJobSink
from poolx.exceptions import PoolNotRunning
from poolx.queue.base import AbstractTaskQueue
from poolx.queue.urls import redact_url
from poolx.tally import TaskTally, failure_outcome
from poolx.task import FunctionTask, TaskCancelled, TaskFailure, error_text

__all__ = ["BrokerConsumer", "InFlight"]

log = logging.getLogger("poolx.consumer")

_ESTIMATES_KEPT = 1024
"""Run-time estimates are kept for at most this many task names (the
oldest name is forgotten first)."""


class InFlight(BaseJobSink):
    """One task taken from the queue and not answered yet: held by the
    consumer (prefetched, ``seq`` is None) or handed to the pool, whose
    :class:`~poolx.engine.results.JobSink` it is."""

    __slots__ = ("consumer", "key", "task", "func", "seq", "answered", "in_pool", "beat", "taken",
                 "slow", "counted", "cancelled", "pid")

    def __init__(self, consumer: BrokerConsumer, key: int, task: FunctionTask, func: Any,
                 beat: int, slow: bool, taken: float) -> None:
        self.consumer = consumer
        self.key = key
        self.task = task
        self.func = func  # the callable sent with the task, or None (worker_broker)
        self.seq: int | None = None  # its job in the pool (Pool.submit_job), once handed over
        self.answered = False  # the pool answered (job_done)
        self.in_pool = False  # handed to the pool (set just before submit_job)
        self.beat = beat  # its key in the heartbeat table
        self.taken = taken  # time.monotonic() when it was taken
        self.slow = slow  # its name's run time is unknown or long: never held ahead
        self.counted = False  # counted as started in the consumer's task tally
        self.cancelled = False  # cancelled (Broker.cancel): whatever the pool says is dropped
        self.pid: int | None = None  # the worker it was sent to (then: that ran it)

    # -- JobSink: called on the pool's supervisor thread ---------------------------

    def job_sent(self, pid: int) -> None:
        self.pid = pid

    def job_done(self, index: int, ok: bool, value: Any, seconds: float | None = None) -> None:
        """The pool answered: the worker returned ``(outcome, seconds, its
        pid)`` (``ok``), or the job failed with the exception ``value``
        (see :meth:`BrokerConsumer.answered`).  The engine's ``seconds`` are
        not used: ``run_task`` times the task itself, without the time its
        worker spends unpickling the call."""
        self.answered = True
        self.consumer.answered(self, ok, value)

    # -- on the answer thread ------------------------------------------------------

    def failed(self, error: BaseException) -> None:
        """The job failed in the pool (timeout, lost...)."""
        consumer = self.consumer
        outcome = failure_outcome(error)
        if outcome is not None:  # (None: it never started, and goes back to the queue)
            # A soft time limit the task did not catch says how long it ran.
            seconds = getattr(error, SECONDS, None)
            consumer.tally_ended(self, outcome, seconds if isinstance(seconds, float) else None)
        consumer.settle(self, outcomes.from_pool_error(self.task, consumer.broker.name, error))

    def worker_pid(self) -> int | None:
        """The pid of the worker the task was sent to (or ran on), if known."""
        return self.pid

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
    :param prefetch: Tasks each worker may hold ahead of the one it runs
        (0: take a task only when a worker is free).  ``None`` (the default)
        adapts to each task name's mean run time: as many as fit in
        :data:`PREFETCH_WINDOW` seconds (at most :data:`PREFETCH_MAX`), and
        none for names whose run time is unknown or longer than that, which
        go to the pool only when a worker is idle.  A task taken in a batch
        that waits longer than :data:`GIVE_BACK_AFTER` seconds without a
        worker goes back to the queue, so a long task never keeps another
        waiting while a worker elsewhere is idle.
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
        self.give_back_after = GIVE_BACK_AFTER
        """Seconds a task taken ahead may wait for a worker before it goes
        back to the queue."""
        self._run_times: dict[str, MovingAverage] = {}  # task name -> mean run time
        self._last_name: str | None = None  # the name of the task taken last
        self.stop_requested = threading.Event()
        """Set once :meth:`stop` was called or the pool broke."""
        self.broken: BaseException | None = None
        self.started_at: float | None = None
        self.stats: dict[str, int] = dict.fromkeys(("taken", "done", "failed", "requeued"), 0)
        self._tally = TaskTally()  # by task name, under self._lock: see snapshot()
        self._failures = RecentFailures()  # the last final failures, under self._lock: see _info()

        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # intake waits for room, join for the drain
        self._in_flight: dict[int, InFlight] = {}  # taken and not answered (held or in the pool)
        self._held: dict[int, InFlight] = {}  # taken ahead, not handed to the pool yet (in order)
        self._held_slow = 0  # how many of them are slow (see InFlight.slow)
        self._in_pool = 0  # handed to the pool and not answered
        self._in_pool_slow = 0  # how many of them are slow
        self._keys = itertools.count()
        self._saved_retry_timeout: float | None = None  # see _shorten_retries
        self._published: tuple[int, ...] = ()  # the task counts of the last status tick
        self._skipped = False  # the last status tick published nothing
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
        self._cancels = CancelWatch(self)
        self.answers = Answers(self.settle_answers, "poolx-consumer-answers")
        """The pool's answers (each task's :meth:`InFlight.job_done`) that
        :meth:`answered` does not settle at once, settled in batches on
        their own thread."""
        # A backend with its own store_result buffers the write (redis://):
        # a plain result can then be stored on the supervisor thread.
        self._buffered_store = (type(broker.taskqueue).store_result
                                is not AbstractTaskQueue.store_result)

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
        self._cancels.start()
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
        self._shorten_retries()
        self._give_back_held(None, "the consumer is stopping")
        if join:
            self.join()

    def _shorten_retries(self) -> None:
        """Retry backend operations at most :data:`STOP_RETRY_TIMEOUT` seconds
        from now on (a backend with a settable ``retry_timeout``), until
        :meth:`join` has finished."""
        taskqueue = self.broker.taskqueue
        with self._lock:
            current = getattr(taskqueue, "retry_timeout", None)
            if self._saved_retry_timeout is not None or not isinstance(current, (int, float)) \
                    or current <= STOP_RETRY_TIMEOUT:
                return
            try:
                taskqueue.retry_timeout = STOP_RETRY_TIMEOUT
            except AttributeError:  # read-only: this backend retries as it does
                return
            self._saved_retry_timeout = current

    def _restore_retries(self) -> None:
        with self._lock:
            saved, self._saved_retry_timeout = self._saved_retry_timeout, None
        if saved is not None:
            self.broker.taskqueue.retry_timeout = saved

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
        self._cancels.close()
        self.answers.close()
        thread = self._heartbeat_thread
        if thread is not None:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if first and self._started:
            self._flush()
            if self.register:
                self._unregister()
        self._restore_retries()
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
    def held(self) -> int:
        """Tasks taken ahead and not handed to the pool yet."""
        return len(self._held)

    def estimate(self, name: str) -> float | None:
        """The mean run time (seconds) of recent tasks named ``name``, or
        None while none has finished here."""
        average = self._run_times.get(name)
        return None if average is None else average.value

    def depth(self, name: str | None) -> int:
        """How many tasks named ``name`` each worker may hold ahead of the
        one it runs (the ``prefetch`` option, or what the name's run time
        allows: none while it is unknown)."""
        if self.prefetch is not None:
            return self.prefetch
        if name is None:
            return 0
        return prefetch_depth(self.estimate(name), PREFETCH_WINDOW, PREFETCH_MAX)

    @property
    def capacity(self) -> int:
        """How many tasks may be in flight: one per worker, plus the prefetch
        that the last task taken allows (none while a slow task is held)."""
        depth = 0 if self._held_slow else self.depth(self._last_name)
        return max(1, self._workers) * (1 + depth)

    # -- the intake thread's side -------------------------------------------------

    def wait_for_room(self) -> int | None:
        """Block until fewer tasks are in flight than :attr:`capacity`;
        return how many more may be taken, or None once stopping.  Tasks
        held longer than :attr:`give_back_after` go back to the queue
        meanwhile."""
        while True:
            with self._lock:
                while not self._stopping and len(self._in_flight) >= self.capacity:
                    wait = None
                    if self._held:
                        oldest = next(iter(self._held.values()))
                        wait = oldest.taken + self.give_back_after - time.monotonic()
                        if wait <= 0:
                            break
                    self._waiting_for_room = True
                    self._room.wait(wait)
                else:
                    self._waiting_for_room = False
                    if self._stopping:
                        return None
                    return self.capacity - len(self._in_flight)
                self._waiting_for_room = False
            self._give_back_held(time.monotonic() - self.give_back_after,
                                 "no worker was free in time")

    def track(self, task: FunctionTask, func: Any) -> None:
        """A task was taken: keep it in flight (with heartbeats), and hand it
        to the pool as soon as :meth:`pump` allows.

        :param task: The task.
        :param func: The callable sent with it (None with ``worker_broker``).
        """
        self.track_all([(task, func)])

    def track_all(self, taken: list[tuple[FunctionTask, Any]]) -> None:
        """:meth:`track` for tasks taken together, in order (one lock, one
        :meth:`pump`).

        :param taken: ``(task, func)`` pairs.
        """
        if not taken:
            return
        now = time.monotonic()
        beats = self._heartbeats.add_all([task for task, _ in taken], now)
        adaptive = self.prefetch is None
        slow_names: dict[str, bool] = {}
        entries = []
        for (task, func), beat in zip(taken, beats, strict=True):
            name = task.name
            slow = slow_names.get(name)
            if slow is None:
                slow = slow_names[name] = adaptive and self.depth(name) == 0
            entries.append(InFlight(self, next(self._keys), task, func, beat, slow, now))
        with self._lock:
            stopping = self._stopping
            if not stopping:
                in_flight, held = self._in_flight, self._held
                for entry in entries:
                    in_flight[entry.key] = held[entry.key] = entry
                    self._held_slow += entry.slow
                self._last_name = entries[-1].task.name
        if stopping:  # stop() has already given back what was held
            self._heartbeats.discard(*beats)
            for entry in entries:
                self.give_back(entry.task, "the consumer is stopping")
            return
        self._cancels.poke()
        self.pump()

    def pump(self) -> None:
        """Hand held tasks to the pool, oldest first, while the pool can start
        them soon: a slow task (see :attr:`InFlight.slow`) while fewer slow
        tasks than workers are in the pool; a tiny one while the workers not
        taken by slow tasks hold less than the prefetch its name allows."""
        workers = max(1, self._workers)
        chosen = []
        with self._lock:
            if not self._held or not self.accepting:
                return
            full: set[str] = set()
            depths: dict[str, int] = {}
            for entry in list(self._held.values()):
                name = entry.task.name
                if name in full:
                    continue
                free = workers - self._in_pool_slow  # workers not taken by slow tasks
                if entry.slow:
                    room = free > 0
                else:
                    depth = depths.get(name)
                    if depth is None:
                        depth = depths[name] = self.depth(name)
                    room = self._in_pool - self._in_pool_slow < free * (1 + depth)
                if not room:
                    full.add(name)
                    continue
                del self._held[entry.key]
                self._held_slow -= entry.slow
                self._in_pool += 1
                self._in_pool_slow += entry.slow
                entry.in_pool = True
                chosen.append(entry)
        if chosen:
            self._submit(chosen)

    def _submit(self, entries: list[InFlight]) -> None:
        """Hand tasks to the pool, in one call (one wake-up of its supervisor)."""
        queue_name = self.broker.name
        calls = []
        for entry in entries:
            task = entry.task
            calls.append((entry, run_task, (task, entry.func, queue_name),
                          task.soft_timeout, task.timeout, task.memory_limit))
        try:
            seqs = self.pool.submit_jobs(calls)
        except PoolNotRunning as err:
            for entry in entries:
                self.settle(entry, outcomes.not_running(err, stopping=not self.accepting))
            return
        except Exception as err:
            seqs = [err] * len(entries)
        for entry, seq in zip(entries, seqs, strict=True):
            if isinstance(seq, int):
                entry.seq = seq
            else:  # the pool refused this task (e.g. its limits)
                task = entry.task
                self.settle(entry, outcomes.Store(TaskFailure(
                    task.name, queue_name, task.id, f"not run: {error_text(seq)}")))

    def _give_back_held(self, taken_before: float | None, why: str) -> None:
        """Return held tasks taken before ``taken_before`` (all if None) to
        the queue."""
        with self._lock:
            stale = [entry for entry in self._held.values()
                     if taken_before is None or entry.taken <= taken_before]
            for entry in stale:
                del self._held[entry.key]
                self._held_slow -= entry.slow
        for entry in stale:
            self.give_back(entry.task, why, quiet=True)
            self._untrack([entry])

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.stats[what] += n

    # -- outcomes (on the pool's supervisor thread, then the answer thread) ------

    def answered(self, entry: InFlight, ok: bool, value: Any) -> None:
        """The pool answered for ``entry`` (see :meth:`InFlight.job_done`);
        called on the pool's supervisor thread, so it never blocks and
        never raises.

        A plain result (a value, not a failure, of a task not cancelled)
        is stored right here when the backend buffers its writes and no
        task waits to be handed to the pool: that costs no wake-up of
        another thread.  Anything else goes to the answer thread
        (:meth:`settle_answers`), which may block (a task given back, a
        retry) and hands held tasks to the pool once per batch.

        :param entry: The task in flight.
        :param ok: The worker returned: ``value`` is what
            :func:`~poolx.consumer.inworker.run_task` returned; else the job
            failed with the exception ``value``.
        :param value: See ``ok``.
        """
        if ok and self._buffered_store and not self._held and not entry.cancelled \
                and not isinstance(value[0], TaskFailure):
            try:
                result, seconds, entry.pid = value
                self._store_plain([(entry, result, seconds)])
            except Exception:
                log_failure(log, "%s: the answer for %s was not carried out", self.name,
                            entry.describe())
            return
        self.answers.add((entry, ok, value))

    def settle_answers(self, answers: list[tuple[InFlight, bool, Any]]) -> None:
        """Carry out the pool's answers (:meth:`InFlight.job_done`) for a
        batch of tasks, on the answer thread (:class:`~poolx.consumer.answers.Answers`).

        Plain results (a value, not a failure, of a task not cancelled) are
        counted under one lock and leave the table together; anything else
        goes through :meth:`finished` or :meth:`InFlight.failed`.

        :param answers: ``(entry, ok, value)``: ``value`` is what
            :func:`~poolx.consumer.inworker.run_task` returned if ``ok``,
            else the exception the job failed with.
        """
        plain = []
        for entry, ok, value in answers:
            try:
                if not ok:
                    entry.failed(value)
                    continue
                result, seconds, entry.pid = value
                if entry.cancelled or isinstance(result, TaskFailure):
                    self.finished(entry, result, seconds)
                else:
                    plain.append((entry, result, seconds))
            except Exception:
                log_failure(log, "%s: the answer for %s was not carried out", self.name,
                            entry.describe())
        if plain:
            self._store_plain(plain)

    def _store_plain(self, plain: list[tuple[InFlight, Any, float]]) -> None:
        """Store the results of tasks that returned a value, and untrack them."""
        with self._lock:
            tally = self._tally
            for entry, _, seconds in plain:
                name = entry.task.name
                self._ran(name, seconds)
                tally.ended(name, None, seconds, entry.counted)
                entry.counted = True
            self.stats["done"] += len(plain)
        broker = self.broker
        for entry, value, _ in plain:
            try:
                broker.set_result(entry.task, value)
            except Exception:
                task = entry.task
                log_failure(log, "%s: the result of %s [%s:%s] was not stored", self.name,
                            task.name, broker.name, task.id)
        self._untrack([entry for entry, _, _ in plain])

    def _ran(self, name: str, seconds: float) -> None:
        """A task named ``name`` ran ``seconds``: its mean run time (lock held)."""
        run_times = self._run_times
        average = run_times.pop(name, None)  # re-inserted: most recent last
        if average is None:
            average = MovingAverage()
            if len(run_times) >= _ESTIMATES_KEPT:
                del run_times[next(iter(run_times))]
        run_times[name] = average
        average.add(seconds)

    def finished(self, entry: InFlight, value: Any, seconds: float) -> None:
        """The worker returned ``value`` after running ``seconds``.

        :param entry: The task in flight.
        :param value: What the worker returned (a value or a TaskFailure).
        :param seconds: How long the task ran.
        """
        with self._lock:
            self._ran(entry.task.name, seconds)
        self.tally_ended(entry, "error" if isinstance(value, TaskFailure) else None, seconds)
        self.settle(entry, outcomes.from_worker(entry.task, self.broker.name, value))

    def tally_ended(self, entry: InFlight, outcome: str | None, seconds: float | None) -> None:
        """Count a task that started and ended (see :class:`poolx.tally.TaskTally`).

        :param entry: The task in flight.
        :param outcome: None for success, else one of :data:`poolx.tally.FAILURE_OUTCOMES`.
        :param seconds: How long it ran, if known.
        """
        with self._lock:
            self._tally.ended(entry.task.name, outcome, seconds, entry.counted)
            entry.counted = True

    def settle(self, entry: InFlight, outcome: outcomes.Outcome) -> None:
        """Carry out ``outcome`` for a task in flight, which leaves the table.

        :param entry: The task in flight.
        :param outcome: What to do: store a value, or give the task back.
        """
        task = entry.task
        if entry.cancelled and isinstance(outcome, outcomes.Store):
            outcome = outcomes.cancelled(task, self.broker.name)
        if isinstance(outcome, outcomes.GiveBack):
            self.give_back(task, outcome.why)
        else:
            self.store(task, outcome.value, entry.worker_pid())
        self._untrack([entry])
        if isinstance(outcome, outcomes.GiveBack) and outcome.broken is not None:
            self._set_broken(outcome.broken)

    def store(self, task: FunctionTask, value: Any, worker: int | None = None) -> None:
        """Store a task's result (or failure) through this process's broker.

        :param task: The task.
        :param value: Its result, or a TaskFailure.
        :param worker: The pid of the worker that ran it, if one did: a
            final failure is listed with it in the pool's status.
        """
        failed = isinstance(value, TaskFailure)
        if isinstance(value, TaskCancelled):  # on request: not listed as a failure
            log.info("stopped: %s", value)
        elif failed and not value.retryable:  # a retryable one: the broker logs the retry
            log.error("task failed: %s", value)
            with self._lock:
                self._failures.add(value, worker, time.time())
        self.count("failed" if failed else "done")
        try:
            self.broker.set_result(task, value)
        except Exception:
            log_failure(log, "%s: the result of %s [%s:%s] was not stored", self.name,
                        task.name, self.broker.name, task.id)

    def give_back(self, task: FunctionTask, why: str, quiet: bool = False) -> None:
        """Return a task that never started to the queue (or fail it clearly).

        :param task: The task, which never started.
        :param why: Why it goes back (logged).
        :param quiet: Log it at debug level (a routine give-back).
        """
        queue_name = self.broker.name
        taskqueue = self.broker.taskqueue
        try:
            message, args = self.broker.serialize(task, deferred=True)
            if args:
                raise ValueError("its arguments still hold Deferred results")
            if taskqueue.requeue_task(task.id, message, task.ignore_result):
                self.count("requeued")
                log.log(logging.DEBUG if quiet else logging.INFO, "returned %s [%s:%s] to the queue: %s", task.name, queue_name, task.id, why)
            else:
                log.debug("not requeued (no longer processing): %s [%s:%s]",
                          task.name, queue_name, task.id)
            return
        except NotImplementedError:
            reason = f"{why}, and the {type(taskqueue).__module__} backend cannot requeue tasks"
        except Exception as err:
            reason = f"{why}, and it could not be requeued: {error_text(err)}"
        self.store(task, TaskFailure(task.name, queue_name, task.id, f"not run: {reason}"))

    def _untrack(self, entries: list[InFlight]) -> None:
        self._heartbeats.discard(*[entry.beat for entry in entries])
        with self._lock:
            in_flight, held = self._in_flight, self._held
            untracked = False
            for entry in entries:
                if in_flight.pop(entry.key, None) is None:
                    continue
                untracked = True
                if entry.in_pool:
                    self._in_pool -= 1
                    self._in_pool_slow -= entry.slow
                elif held.pop(entry.key, None) is not None:
                    self._held_slow -= entry.slow
            if not untracked:
                return
            left = len(in_flight)
            if self._stopping:
                if not left:
                    self._room.notify_all()
            elif self._waiting_for_room and left <= self.capacity // 2:
                self._room.notify()
        if self._held:
            self.pump()

    def _set_broken(self, error: BaseException) -> None:
        with self._lock:
            if self.broken is not None:
                return
            self.broken = error
            self._stopping = True
            self._room.notify_all()
        self.stop_requested.set()
        self._shorten_retries()
        self._give_back_held(None, "the pool cannot run tasks")
        log.error("%s: the pool cannot run tasks, no more are taken: %s", self.name, error)
        if self.on_broken is not None:
            try:
                self.on_broken()
            except Exception:
                log_failure(log, "%s: on_broken callback failed", self.name)

    def check_pool(self) -> None:
        """Stop taking tasks if the pool has broken (e.g. every worker's
        initializer fails).  Called on every status tick; safe from any
        thread but the pool's own supervisor."""
        broken = self.pool.broken
        if broken is not None:
            self._set_broken(broken)

    # -- cancelled tasks (on the watcher thread) ---------------------------------

    def in_flight_ids(self) -> list[str]:
        """The ids of the tasks in flight that are not known to be cancelled."""
        with self._lock:
            return [entry.task.id for entry in self._in_flight.values() if not entry.cancelled]

    def stop_cancelled(self, task_id: str) -> None:
        """The task ``task_id`` was cancelled (its outcome is stored): drop it
        if it is held ahead, or kill its worker if it is in the pool.

        :param task_id: The id of a task in flight.
        """
        with self._lock:
            entries = [entry for entry in self._in_flight.values()
                       if entry.task.id == task_id and not entry.cancelled]
            held = []
            for entry in entries:
                entry.cancelled = True
                if not entry.in_pool and self._held.pop(entry.key, None) is not None:
                    self._held_slow -= entry.slow
                    held.append(entry)
        for entry in held:  # never started
            self.settle(entry, outcomes.cancelled(entry.task, self.broker.name))
        for entry in entries:
            if entry not in held:
                log.info("%s: cancelled while running: %s; its worker is killed", self.name,
                         entry.describe())
                self._kill(entry)

    def _cancelled_in_pool(self) -> list[InFlight]:
        with self._lock:
            return [entry for entry in self._in_flight.values()
                    if entry.cancelled and entry.in_pool]

    def killing(self) -> bool:
        """Are cancelled tasks still in the pool (their jobs not answered)?"""
        return bool(self._cancelled_in_pool())

    def kill_pending(self) -> None:
        """Kill again the workers of cancelled tasks still in the pool (a job
        that had not started when it was cancelled could not be killed)."""
        for entry in self._cancelled_in_pool():
            self._kill(entry)

    def _kill(self, entry: InFlight) -> None:
        seq, pid = entry.seq, entry.pid
        if seq is not None and pid is not None and not entry.answered:
            # SIGKILL: a worker of ``poolx worker`` ignores SIGTERM, and a
            # task must not be able to catch its cancel.  The pool kills
            # the worker only while it runs this very job.
            self.pool.terminate_job(pid, signal.SIGKILL, seq)

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
        # An idle pool whose status did not change publishes every other tick
        # (the entry lives three intervals): half the registry's cost.
        with self._lock:
            idle = not self._in_flight and not self._stopping
            counts = tuple(self.stats.values())
            skip = idle and counts == self._published and not self._skipped
            self._skipped = skip
            self._published = counts
        if skip:
            return
        try:
            info = json.dumps(self._info(stats), default=str)
            self.broker.taskqueue.register_pool(self.pool_id, info, self.status_interval * 3)
        except NotImplementedError:
            log.debug("%s: this backend has no pool registry", self.name)
            self.register = False
        except Exception:
            log_failure(log, "%s: cannot publish the pool status", self.name)

    def _flush(self) -> None:
        """Wait until the results stored so far are committed (a backend that
        buffers them, as ``redis://``, logs what it could not store)."""
        flush = getattr(self.broker.taskqueue, "flush", None)
        if flush is not None:
            try:
                flush()
            except Exception:
                log_failure(log, "%s: cannot flush the results", self.name)

    def _unregister(self) -> None:
        try:
            self.broker.taskqueue.unregister_pool(self.pool_id)
        except NotImplementedError:
            pass
        except Exception:
            log_failure(log, "%s: cannot unregister from the pool registry", self.name)

    def info(self) -> dict[str, Any]:
        """This pool's status, as ``poolx status`` shows it."""
        return self._info(self._read_pool())

    def _running(self, stats: dict[str, Any]) -> tuple[list[InFlight], dict[int, InFlight]]:
        """The tasks in flight (oldest first) and, by worker pid, the one each
        worker of the pool's ``stats`` runs; those are counted as started in
        the task tally (once).

        A worker runs the tasks sent to it in order, so the one it runs is
        the oldest task in flight that was sent to it — if it runs one at
        all: ``stats`` says so (a worker's ``job``, read from the slot the
        worker sets when it starts a job, as the pool's own tally does), not
        just that tasks were sent to it (``busy``).  A task sent and not
        started yet is not running (nor counted as started)."""
        with self._lock:
            in_flight = sorted(self._in_flight.values(), key=lambda entry: entry.key)
        by_pid: dict[int, InFlight] = {}
        for entry in in_flight:
            pid = entry.worker_pid()
            if pid is not None:
                by_pid.setdefault(pid, entry)  # a worker runs the oldest task sent to it
        running: dict[int, InFlight] = {}
        for worker in stats.get("workers", []):
            held = by_pid.get(worker["pid"])
            if held is not None and worker["state"] == "busy" and worker.get("job") is not None:
                running[worker["pid"]] = held
        with self._lock:
            for entry in running.values():
                if not entry.counted and entry.key in self._in_flight:
                    entry.counted = True
                    self._tally.started(entry.task.name)
        return in_flight, running

    def snapshot(self) -> dict[str, Any]:
        """What the consumer adds to the pool's ``stats()`` (see
        :meth:`poolx.pool.process.WorkerPool.stats`): the pool's stats with
        ``"tasks"`` counted by task name here instead of by function in the
        engine, and ``queue``, ``in_flight``, ``running``, ``prefetched``
        (taken and not running yet), ``queue_depth`` (tasks waiting in the
        queue, None if it cannot be read) and ``reconnects`` (the backend's,
        None if it does not reconnect)."""
        stats = self._read_pool()
        in_flight, running = self._running(stats)
        with self._lock:
            tasks = self._tally.snapshot()
        taskqueue = self.broker.taskqueue
        try:
            depth: int | None = taskqueue.size()
        except Exception:
            log.debug("%s: cannot read the queue's size", self.name, exc_info=True)
            depth = None
        return {
            **stats,
            "tasks": tasks,
            "queue": self.broker.name,
            "in_flight": len(in_flight),
            "running": len(running),
            "prefetched": len(in_flight) - len(running),
            "queue_depth": depth,
            "reconnects": taskqueue.reconnects,
        }

    def _info(self, stats: dict[str, Any]) -> dict[str, Any]:
        in_flight, by_worker = self._running(stats)
        running = {entry.key for entry in by_worker.values()}
        workers = []
        for worker in stats.get("workers", []):
            held = by_worker.get(worker["pid"])
            workers.append({
                "pid": worker["pid"],
                "state": worker["state"],
                "task": None if held is None else held.describe(),
                "tasks_done": worker.get("tasks_done"),
                "rss": worker.get("rss"),
                "uptime": worker.get("uptime"),
            })
        broken = self.broken if self.broken is not None else stats.get("broken")
        with self._lock:
            failed = self._failures.records()
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
            "in_flight": [entry.describe() for entry in in_flight],
            "running": [entry.describe() for entry in in_flight if entry.key in running],
            "prefetched": [entry.describe() for entry in in_flight if entry.key not in running],
            "failed": failed,
        }

    def __repr__(self) -> str:
        if self.running:
            state = "running"
        else:
            state = "stopped" if self._closed else "stopping" if self._started else "new"
        return f"<BrokerConsumer {self.name} {state} in_flight={self.in_flight}>"

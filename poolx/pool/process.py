"""Multi-process worker pool for a task-queue broker (WorQ's
``worq.pool.process`` under poolx's name; layer L7).

Owned here: :class:`WorkerPool` — a :class:`poolx.Pool` fed by a
:class:`~poolx.consumer.BrokerConsumer` — plus WorQ's helpers
:func:`start_pools`, :func:`run_in_subprocess` and :class:`PopenProcess`.
Who does what::

    WorkerPool.start ─▶ poolx.Pool(workers, initializer=_init_worker)  ─▶ each worker:
                     │                                                    init_func(url, *init_args, **init_kwargs)
                     └▶ BrokerConsumer(pool, broker, worker_broker=True)   returns its broker; tasks are
                          takes tasks, applies their limits, stores         invoked on it
                          results through *this* process's broker

    start_pools(*pools) ─▶ start each; SIGTERM/SIGINT ─▶ graceful stop of all
                                       a second signal ─▶ immediate stop

* **Metrics** (``metrics_port``): a :class:`poolx.metrics.MetricsServer`
  serves :meth:`WorkerPool.stats` from just before the pool starts until it
  has stopped.
* **Graceful stop** (:meth:`WorkerPool.stop`): the consumer stops taking
  tasks, the pool is closed, the tasks already running finish and their
  results are stored; workers are not killed.
* **Immediate stop** (:meth:`WorkerPool.terminate`, a second signal): the
  workers are killed; their running tasks fail with ``Terminated``, tasks
  taken but not started go back to the queue.
* **A worker killed mid-task**: the pool sees the death at once; the task's
  waiter gets a :class:`~poolx.task.TaskExpired` saying so, and a new worker
  replaces the dead one.
* **The pool's process killed**: every worker notices at once through the
  engine's lifeline pipe and exits; as a second line of defence each worker
  also checks its parent every :data:`WORKER_POLL_INTERVAL` seconds (read
  at run time, as in WorQ).

Workers import this module for their initializer, so the pool's side (the
engine's API, the consumer, cloudpickle) is imported where it is used, in
the pool's process only.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psutil

from poolx.checks import check_count
from poolx.const import DEFAULT
from poolx.consumer.inworker import init_worker
from poolx.queue.urls import redact_url

if TYPE_CHECKING:
    from poolx.consumer.adapter import BrokerConsumer
    from poolx.consumer.scheduler import Scheduler
    from poolx.engine.api import Pool
    from poolx.metrics import MetricsServer

__all__ = [
    "WorkerPool",
    "Error",
    "start_pools",
    "run_in_subprocess",
    "PopenProcess",
    "WORKER_POLL_INTERVAL",
    "default_context",
]

log = logging.getLogger(__name__)

PYTHON_EXE = sys.executable
WORKER_POLL_INTERVAL: float = 30
"""Seconds between two checks, in each worker, that the pool's process is
still alive (read at run time; the lifeline pipe usually ends an orphaned
worker long before)."""

EXIT_ORPHANED = 4

# Pool options a WorkerPool sets itself.
_OWN_OPTIONS = {
    "processes": "workers",
    "initializer": "init_func",
    "initargs": "init_args",
    "maxtasksperchild": "max_worker_tasks",
}


class Error(Exception):
    """A WorkerPool used wrongly (started twice), or one that broke."""


# -- inside each worker -------------------------------------------------------------


def _process_started(pid: int) -> float | None:
    """When process ``pid`` started (tells it from a later one with its pid)."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _watch_pool_process(pool_pid: int, started: float | None) -> None:
    """Exit once the pool's process is gone (a second line of defence behind
    the engine's lifeline).  Under forkserver and spawn the pool's process is
    not the worker's parent, so its pid and start time are checked."""
    never = threading.Event()
    module = sys.modules[__name__]
    while True:
        never.wait(module.WORKER_POLL_INTERVAL)
        if _process_started(pool_pid) != started:
            log.error("Worker-%s: the pool's process is gone; exiting", os.getpid())
            os._exit(EXIT_ORPHANED)


def _init_worker(pool: tuple[int, float | None], init_func: Callable[..., Any], init_args: tuple,
                 init_kwargs: dict) -> None:
    """Pool initializer of a WorkerPool's workers.

    Workers ignore SIGTERM and SIGINT: a signal sent to the whole process
    group (``kill -TERM -PGID``, systemd's default ``KillMode``, a
    terminal's CTRL+C) reaches the pool's process, which stops gracefully
    and lets the running tasks finish.  (A plain :class:`poolx.Pool` worker
    raises ``KeyboardInterrupt`` in its job on SIGINT, as the standard
    library's does; a task-queue worker must not: the task would fail.)
    The pool kills its workers with SIGKILL when it must; a worker whose
    pool process died exits by itself."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_pool_process, args=pool, name="poolx-pool-watch", daemon=True).start()
    init_worker(init_func, init_args, init_kwargs)


# -- the pool ---------------------------------------------------------------------


def default_context() -> Any:
    """The start method of a WorkerPool's workers unless ``context=`` says
    otherwise: ``forkserver`` where available, else ``spawn``.

    Not ``fork``: the pool's process runs threads (the consumer, the pool's
    supervisor and callback threads) that log and write while workers are
    started, and a forked child inherits any lock such a thread held at
    that instant — a worker could then hang on its first log line.  (WorQ
    starts fresh interpreters for the same reason; Python 3.14 made
    ``forkserver`` its default.)  ``init_func`` must therefore be picklable,
    as WorQ requires; ``context=multiprocessing.get_context("fork")`` is
    faster to start and fine for programs without such threads.
    """
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class WorkerPool:
    """Multi-process worker pool: a :class:`poolx.Pool` consuming a broker.

    :param broker: The :class:`~poolx.core.Broker` whose queue is consumed.
        Results are stored through it, in this process (so ``memory://``
        works).
    :param init_func: Worker initializer, called once in each worker as
        ``init_func(broker.url, *init_args, **init_kwargs)``.  It must return
        a broker exposing the tasks (it usually also sets up logging), and be
        picklable under the ``spawn`` and ``forkserver`` start methods.
    :param init_args: More positional arguments for ``init_func``.
    :param init_kwargs: Keyword arguments for ``init_func``.
    :param workers: Number of worker processes (default: the CPU count).
    :param max_worker_tasks: Retire a worker after this many tasks and start
        a fresh one in its place (task order is kept).
    :param name: Distinguishes this pool in logs and ``poolx status``
        (default: the queue name unless it is ``'default'``).
    :param pool_options: More :class:`poolx.Pool` options: ``timeout``,
        ``soft_timeout``, ``memory_limit``, ``max_memory_per_child``,
        ``context`` (default: :func:`default_context`), ``on_process_up``...
        (defaults for every task; a task's
        own ``timeout``, ``soft_timeout`` and ``memory_limit`` options win),
        and the :class:`~poolx.consumer.BrokerConsumer` options ``prefetch``
        and ``status_interval``; ``metrics_port`` and ``metrics_bind`` serve
        this worker pool's :meth:`stats` as Prometheus metrics
        (:doc:`metrics`) while it runs (see :attr:`metrics_server`).
    :param scheduler: Also run a :class:`~poolx.consumer.scheduler.Scheduler`
        in this process while the pool runs: it enqueues the ticks of the
        queue's periodic entries (:meth:`poolx.core.Broker.periodic`).

    ``init_func``, ``init_args`` and ``init_kwargs`` are read when the pool
    starts, not here: ``init_args`` holds the broker URL first, as WorQ's.
    """

    def __init__(
        self,
        broker: Any,
        init_func: Callable[..., Any],
        init_args: tuple = (),
        init_kwargs: dict[str, Any] | None = None,
        workers: int | None = None,
        max_worker_tasks: int | None = None,
        name: str | None = None,
        scheduler: bool = False,
        **pool_options: Any,
    ) -> None:
        if not callable(init_func):
            raise TypeError(f"init_func must be callable, not {type(init_func).__name__}")
        self.broker = broker
        self.init_func = init_func
        self.init_args: tuple = (broker.url, *tuple(init_args))
        self.init_kwargs: dict[str, Any] = {} if init_kwargs is None else init_kwargs
        if workers is None:
            workers = os.cpu_count() or 1
        self.workers: int = check_count("workers", workers, 1)  # type: ignore[assignment]
        self.max_worker_tasks = check_count("max_worker_tasks", max_worker_tasks, 1, allow_none=True)
        if name is None and broker.name != DEFAULT:
            name = broker.name
        self.name = name
        self.consumer_options = {
            key: pool_options.pop(key) for key in ("prefetch", "status_interval") if key in pool_options
        }
        # Served from here (the pool's own switch would count run_task, not the tasks).
        self.metrics_port: int | None = pool_options.pop("metrics_port", None)
        self.metrics_bind: str = pool_options.pop("metrics_bind", "127.0.0.1")
        self.metrics_server: MetricsServer | None = None
        """The :class:`poolx.metrics.MetricsServer` serving this pool while
        it runs (with ``metrics_port``), or None."""
        _check_pool_options(pool_options)
        self.pool_options = pool_options
        self.pool: Pool | None = None
        self.consumer: BrokerConsumer | None = None
        self.scheduler: Scheduler | None = None
        """The running scheduler (with ``scheduler=True``), else None."""
        self._with_scheduler = bool(scheduler)
        self._lock = threading.Lock()
        self._running = False
        self._stopped = threading.Event()
        self._stopped.set()
        self._listeners: list[Callable[[], Any]] = []

    def __str__(self) -> str:
        parts = (type(self).__name__, os.getpid(), self.name)
        return "-".join(str(part) for part in parts if part)

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<{self} {redact_url(self.broker.url)} [{self.broker.name}] workers={self.workers} {state}>"

    # -- starting -------------------------------------------------------------------

    def start(self, timeout: float = 10, handle_sigterm: bool = True) -> None:
        """Start the worker pool.

        :param timeout: Seconds one fetch of the consumer blocks waiting for
            a task.  A stop does not wait for it: a task it brings after the
            stop goes back to the queue.
        :param handle_sigterm: If true (the default), install SIGTERM and
            SIGINT handlers and block until signalled, then stop gracefully
            (a second signal stops at once); see :func:`start_pools`.  Must
            then be called in the main thread.  If false, start and return.
        :raises Error: if the pool is already running.
        """
        if handle_sigterm:
            start_pools(self, timeout=timeout)
            return
        from poolx.consumer.adapter import BrokerConsumer
        from poolx.engine.api import Pool
        from poolx.engine.pickling import portable

        with self._lock:
            if self._running:
                raise Error("cannot start already running WorkerPool")
            self._running = True
            self._stopped.clear()
        try:
            if self.metrics_port is not None:  # first: a port in use fails before any work
                from poolx.metrics import serve

                self.metrics_server = serve(self, port=self.metrics_port, bind=self.metrics_bind)
            user_up = self.pool_options.get("on_process_up")
            user_exit = self.pool_options.get("on_process_exit")
            options = dict(self.pool_options)
            options.setdefault("context", default_context())
            options["on_process_up"] = lambda process: self._worker_up(process, user_up)
            options["on_process_exit"] = lambda pid, code: self._worker_exit(pid, code, user_exit)
            pool = Pool(
                self.workers,
                initializer=_init_worker,
                initargs=((os.getpid(), _process_started(os.getpid())), portable(self.init_func),
                          tuple(self.init_args), dict(self.init_kwargs)),
                maxtasksperchild=self.max_worker_tasks,
                **options,
            )
            self.pool = pool
            self.consumer = BrokerConsumer(
                pool, self.broker, timeout=timeout, worker_broker=True, name=self.name or str(self),
                on_broken=self._notify, **self.consumer_options,
            )
            self.consumer.start()
            if self._with_scheduler:
                from poolx.consumer.scheduler import Scheduler

                self.scheduler = Scheduler(self.broker)
                self.scheduler.start()
        except BaseException:
            if self.consumer is not None and self.consumer.running:
                self.consumer.stop(join=False)
            if self.pool is not None:
                self.pool.terminate()
            self.pool = self.consumer = None
            if self.metrics_server is not None:
                self.metrics_server.close()
                self.metrics_server = None
            with self._lock:
                self._running = False
                self._stopped.set()
            raise
        log.info("%s started: %d workers on %s [%s]", self, self.workers,
                 redact_url(self.broker.url), self.broker.name)

    def _worker_up(self, process: Any, user: Callable[[Any], Any] | None) -> None:
        log.info("%s: worker %s started", self, process.pid)
        if user is not None:
            user(process)

    def _worker_exit(self, pid: int, exitcode: int, user: Callable[[int, int], Any] | None) -> None:
        if exitcode == 0:
            log.info("%s: worker %s exited", self, pid)
        else:
            how = f"signal {-exitcode}" if exitcode < 0 else f"exit code {exitcode}"
            log.warning("%s: worker %s exited (%s)", self, pid, how)
            consumer = self.consumer
            if consumer is not None:
                consumer.check_pool()
        if user is not None:
            user(pid, exitcode)

    # -- state ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._running

    @property
    def broken(self) -> BaseException | None:
        """Why the pool stopped taking tasks (its workers cannot start), or None."""
        consumer = self.consumer
        return None if consumer is None else consumer.broken

    def stats(self) -> dict[str, Any]:
        """The source of this worker pool's metrics: the pool's
        :meth:`poolx.Pool.stats`, with ``"tasks"`` counted by task name (not
        by the function the pool runs), plus ``queue``, ``queue_depth``,
        ``in_flight``, ``running``, ``prefetched`` and ``reconnects`` (see
        :meth:`poolx.consumer.BrokerConsumer.snapshot`).

        :raises Error: if the pool has not been started.
        """
        consumer = self.consumer
        if consumer is None:
            raise Error("the WorkerPool has not been started")
        return consumer.snapshot()

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener()

    # -- stopping -------------------------------------------------------------------

    def stop(self, join: bool = True) -> bool:
        """Stop gracefully: take no more tasks, let running tasks finish and
        store their results, then let the workers exit.

        :param join: Wait until the pool has stopped (see :meth:`join`).
        :returns: False if the pool was not running.
        """
        with self._lock:
            if not self._running:
                return False
            self._running = False
        log.info("shutting down %s...", self)
        consumer, pool = self.consumer, self.pool
        assert consumer is not None and pool is not None
        if self.scheduler is not None:
            self.scheduler.stop(join=False)
        consumer.stop(join=False)
        pool.close()
        threading.Thread(target=self._finish, name="poolx-stopper", daemon=True).start()
        if join:
            self.join()
        return True

    def terminate(self) -> None:
        """Stop at once: kill the workers.  Running tasks fail with
        ``Terminated``; tasks taken but not started return to the queue."""
        with self._lock:
            was_running, self._running = self._running, False
        consumer, pool = self.consumer, self.pool
        if consumer is None or pool is None or self._stopped.is_set():
            return
        log.warning("terminating %s: running tasks are killed", self)
        if self.scheduler is not None:
            self.scheduler.stop(join=False)
        consumer.stop(join=False)
        pool.terminate()
        if was_running:
            threading.Thread(target=self._finish, name="poolx-stopper", daemon=True).start()
        self.join()

    def _finish(self) -> None:
        consumer, pool, scheduler = self.consumer, self.pool, self.scheduler
        try:
            if scheduler is not None:
                scheduler.join()
            if consumer is not None:
                consumer.join()
            if pool is not None:
                pool.join()
        finally:
            server, self.metrics_server = self.metrics_server, None
            if server is not None:
                server.close()
            log.info("%s stopped", self)
            self._stopped.set()
            self._notify()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the pool has stopped (call ``stop(join=False)`` first).

        :returns: Whether it stopped within ``timeout`` seconds.
        """
        return self._stopped.wait(timeout)

    def __enter__(self) -> WorkerPool:
        self.start(handle_sigterm=False)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _check_pool_options(options: dict[str, Any]) -> None:
    import inspect

    from poolx.engine.api import Pool

    for key, instead in _OWN_OPTIONS.items():
        if key in options:
            raise TypeError(f"WorkerPool sets the pool's {key!r} itself: use {instead}=")
    accepted = inspect.signature(Pool).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"unexpected WorkerPool option(s): {', '.join(unknown)}")


# -- running pools until a signal ------------------------------------------------------


DUPLICATE_SIGNAL_WINDOW = 1.0
"""A SIGTERM or SIGINT within this many seconds of the previous one is the
same request delivered twice (``timeout`` and a process-group signal both
reaching the pool, a terminal's CTRL+C reaching every process), not a second
request: only a signal after that stops the pools at once."""


SIGNAL_CHECK_INTERVAL = 0.25
"""Seconds between two looks at the signals received, at most (see :class:`_Wake`)."""


class _Wake:
    """Wakes the main thread; safe to set from a signal handler.

    A raw lock held while not set: ``set`` releases it, ``wait`` takes it
    (and so clears it).  A ``threading.Event`` is not safe there: its
    ``set`` takes a Python-level lock, and a handler that interrupts the
    main thread while that lock is held (in ``clear``, or in a first
    handler's ``set`` when two signals arrive together) waits for itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        try:
            self._lock.release()
        except RuntimeError:  # already set
            pass

    def wait(self) -> None:
        """Block until set (or for a moment), and clear.

        The wait is bounded: the kernel may deliver a signal to another
        thread, and then the main thread runs the handler only once it
        wakes up by itself."""
        self._lock.acquire(timeout=SIGNAL_CHECK_INTERVAL)


class _Signals:
    """SIGTERM/SIGINT handlers that count signals and wake the main thread;
    duplicates (see :data:`DUPLICATE_SIGNAL_WINDOW`) are counted apart."""

    def __init__(self, wake: _Wake) -> None:
        self.count = 0
        self.duplicates = 0
        self.wake = wake
        self._last = -DUPLICATE_SIGNAL_WINDOW
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.count and now - self._last < DUPLICATE_SIGNAL_WINDOW:
            self.duplicates += 1  # no logging in a signal handler: the main thread reports it
        else:
            self.count += 1
        self._last = now
        self.wake.set()


def start_pools(*pools: WorkerPool, **start_kwargs: Any) -> None:
    """Start one or more pools and block until SIGTERM or SIGINT.

    The first signal stops every pool gracefully (running tasks finish and
    store their results); a second one, at least
    :data:`DUPLICATE_SIGNAL_WINDOW` seconds later, stops them at once
    (running tasks fail with ``Terminated``, tasks taken but not started
    return to the queue).  Must be called in the main thread.

    :param start_kwargs: Passed to each pool's ``start`` (e.g. ``timeout``).
    :raises ValueError: without pools.
    :raises Error: if a pool broke (its workers cannot start); the pools
        are stopped first.
    """
    if not pools:
        raise ValueError("start_pools requires at least 1 argument, got 0")
    start_kwargs.pop("handle_sigterm", None)
    wake = _Wake()
    with _Signals(wake) as signals:
        started: list[WorkerPool] = []
        try:
            for pool in pools:
                pool._listeners.append(wake.set)
                pool.start(handle_sigterm=False, **start_kwargs)
                started.append(pool)
            log.info("Press CTRL+C or send SIGTERM to stop")
            while signals.count == 0 and not any(pool.broken for pool in pools):
                wake.wait()
            if signals.count:
                log.info("stopping gracefully (send the signal again, %g s or more later, to stop "
                         "at once)", DUPLICATE_SIGNAL_WINDOW)
            for pool in started:
                pool.stop(join=False)
            while signals.count < 2 and not all(pool.join(0) for pool in started):
                wake.wait()
            if signals.duplicates:
                log.info("%d duplicate signal(s) within %g s of the first ignored",
                         signals.duplicates, DUPLICATE_SIGNAL_WINDOW)
            if signals.count >= 2:
                log.warning("second signal: stopping at once")
                for pool in started:
                    pool.terminate()
            for pool in started:
                pool.join()
        except BaseException:
            for pool in started:
                pool.terminate()
            raise
        finally:
            for pool in pools:
                if wake.set in pool._listeners:
                    pool._listeners.remove(wake.set)
    broken = [pool for pool in pools if pool.broken is not None]
    if broken:
        raise Error("; ".join(f"{pool} is broken: {pool.broken}" for pool in broken))


# -- WorQ's subprocess helpers ------------------------------------------------------------


def run_in_subprocess(_func: Callable[..., Any], *args: Any, **kw: Any) -> PopenProcess:
    """Call ``_func(*args, **kw)`` in a fresh Python interpreter.

    A new interpreter (``subprocess.Popen``), not a fork: the caller may have
    threads, which do not survive ``fork`` safely.  The call is pickled
    (cloudpickle, so lambdas work) and sent on the child's stdin.

    :returns: A :class:`PopenProcess`.
    :raises pickle.PicklingError: if the call cannot be pickled (the child
        is killed).
    """
    import cloudpickle

    data = cloudpickle.dumps((_func, args, kw))
    prog = "from poolx.pool.process import main; main()"
    proc = subprocess.Popen([PYTHON_EXE, "-c", prog], stdin=subprocess.PIPE, close_fds=True)
    assert proc.stdin is not None
    try:
        proc.stdin.write(data)
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the child died already; its exit code says why
    return PopenProcess(proc)


def main() -> None:
    """Entry point of :func:`run_in_subprocess`'s child process."""
    import pickle

    func, args, kw = pickle.load(sys.stdin.buffer)
    try:
        func(*args, **kw)
    except Exception:
        log.critical("subprocess crashed", exc_info=True)
        raise


class PopenProcess:
    """A ``subprocess.Popen`` that looks like a ``multiprocessing.Process``:
    ``pid``, ``is_alive()``, ``terminate()``, ``join(timeout)``, ``exitcode``;
    other attributes are the Popen's."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self._proc = proc

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def exitcode(self) -> int | None:
        return self._proc.poll()

    def is_alive(self) -> bool:
        return self._proc.poll() is None

    def terminate(self) -> None:
        """Send SIGTERM (a WorkerPool in the child stops gracefully)."""
        if self.is_alive():
            self._proc.terminate()

    def kill(self) -> None:
        if self.is_alive():
            self._proc.kill()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the process to exit, at most ``timeout`` seconds."""
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._proc, name)

    def __repr__(self) -> str:
        return f"<PopenProcess pid={self.pid} exitcode={self.exitcode}>"

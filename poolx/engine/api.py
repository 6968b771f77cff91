"""``poolx.Pool``: the public face of the engine.

Who owns what: :class:`Pool` validates arguments, pickles jobs in the
caller's thread (so an unpicklable argument fails that call, not the pool)
and hands them to the :class:`~poolx.engine.supervisor.Supervisor`, which owns
everything else.  ``imap``/``imap_unordered`` read their input on a feeder
thread, lazily, as the standard library does.

Compatibility: every argument and method of ``multiprocessing.Pool`` with the
same meaning, plus billiard's arguments and methods (keyword-only here, since
the standard library's fifth positional argument is ``context``).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal as signal_module
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from poolx import checks, exceptions
from poolx.engine import payload, pickling, wire
from poolx.engine.config import PoolConfig
from poolx.engine.jobs import Job
from poolx.engine.progress import open_tracker
from poolx.engine.results import (
    ApplyResult,
    IMapIterator,
    IMapUnorderedIterator,
    JobSink,
    MapResult,
)
from poolx.engine.supervisor import Supervisor
from poolx.exceptions import PoolNotRunning, PoolTerminated
from poolx.progress import ProgressOption
from poolx.tally import task_name

if TYPE_CHECKING:  # the exporter itself is imported only when asked for (metrics_port)
    from poolx.metrics import MetricsServer

__all__ = ["Pool"]

RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"
_AT_EXIT_WAIT = 2.0
IMAP_WINDOW = 256  # default: chunks an imap feeder may submit beyond the ones the caller took
IMAP_AHEAD = 256  # once the window is released (close()): chunks beyond the completed ones
IMAP_GROUP = 32  # jobs per submission when imap's input is already in memory
MAP_PICKLED_AHEAD = 2**20  # bytes of pickled chunks map() keeps beyond the finished ones (>= 2 per worker)


def _shutdown(supervisor: Supervisor, metrics: MetricsServer | None = None) -> None:
    """Finalizer: terminate a pool nobody closed (garbage collected, or at exit).

    A pool whose last job just ended is often freed on the supervisor's own
    thread (the job held the last reference to its result, which holds the
    pool): the terminate command is then queued and not waited for.  In a
    forked child's copy of the pool (collected there, or at the child's exit)
    it does nothing: the pool and its workers belong to the parent.
    """
    if not supervisor.in_owner():
        return
    supervisor.stop_accepting()
    if supervisor.post(supervisor.terminate) and not supervisor.on_own_thread():
        supervisor.finished.wait(_AT_EXIT_WAIT)
    if metrics is not None:  # last: its server takes up to 0.5 s to stop
        metrics.close()


class Pool:
    """A process pool: ``multiprocessing.Pool``'s API, billiard's extras, no hangs.

    Args:
        processes: number of worker processes (default ``os.cpu_count()``);
            ``0`` starts an empty pool that :meth:`grow` fills.
        initializer: called as ``initializer(*initargs)`` once in each worker.
        maxtasksperchild: jobs a worker runs before it is replaced.
        context: a ``multiprocessing`` context; by default the one the program
            chose with ``multiprocessing.set_start_method``.
        timeout: hard time limit (seconds) of every job; the worker is killed
            and the job fails with :class:`~poolx.exceptions.TimeLimitExceeded`.
        soft_timeout: soft limit: :class:`~poolx.exceptions.SoftTimeLimitExceeded`
            is raised inside the job.
        memory_limit: bytes (or ``"512MB"``) a worker may use *during* a job;
            over it the worker is killed and the job fails with
            :class:`~poolx.exceptions.MemoryLimitExceeded`.
        memory_poll_interval: how often (s) the RSS of workers running a job
            with a memory limit is sampled.
        max_memory_per_child: KiB (billiard's unit); a worker whose resident
            memory is above it after a job retires gracefully.
        max_restarts, max_restart_freq: more than ``max_restarts`` unexpected
            worker deaths within ``max_restart_freq`` seconds break the pool:
            jobs fail with :class:`~poolx.exceptions.RestartFreqExceeded`.
        on_process_up, on_process_down: ``f(process)`` once per worker.
        on_process_exit: ``f(pid, exitcode)`` once per worker exit.
        on_timeout_set: ``f(result, soft, hard)`` when a job with limits is sent.
        on_timeout_cancel: ``f(result)`` when such a job finished in time.
        lost_worker_timeout: billiard's; accepted, no effect (poolx sees a lost
            worker as soon as its process sentinel fires).
        threads: billiard's; accepted, no effect.
        semaphore: billiard's; accepted, no effect.
        putlocks: billiard's; accepted, no effect.
        allow_restart: billiard's; accepted (:meth:`restart` is always allowed).
        synack: billiard's; accepted, no effect.
        enable_timeouts: billiard's; accepted (limits are always enforced).
        shm_threshold: bytes (or ``"1MB"``); arguments and results holding a
            buffer at least this big travel through shared memory
            (:doc:`shared-memory`); ``None`` keeps everything on the pipe.
        metrics_port: serve Prometheus metrics (:doc:`metrics`) on this TCP
            port (0: a free one) until the pool is terminated or joined; see
            :attr:`metrics_server`.  Needs the ``metrics`` extra.
        metrics_bind: the address the metrics server listens on.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        timeout: float | None = None,
        soft_timeout: float | None = None,
        memory_limit: int | str | None = None,
        memory_poll_interval: float = 0.05,
        max_memory_per_child: int | None = None,
        lost_worker_timeout: float | None = None,
        max_restarts: int | None = None,
        max_restart_freq: float = 1,
        on_process_up: Callable[[Any], Any] | None = None,
        on_process_down: Callable[[Any], Any] | None = None,
        on_process_exit: Callable[[int, int], Any] | None = None,
        on_timeout_set: Callable[[Any, Any, Any], Any] | None = None,
        on_timeout_cancel: Callable[[Any], Any] | None = None,
        threads: bool = True,
        semaphore: Any = None,
        putlocks: bool = False,
        allow_restart: bool = False,
        synack: bool = False,
        enable_timeouts: bool = False,
        shm_threshold: int | str | None = payload.DEFAULT_THRESHOLD,
        metrics_port: int | None = None,
        metrics_bind: str = "127.0.0.1",
    ) -> None:
        self._run_state = "INIT"
        if processes is None:
            processes = os.cpu_count() or 1
        _check_processes(processes)
        _check_maxtasksperchild(maxtasksperchild)
        checks.check_count("max_memory_per_child", max_memory_per_child, 1, allow_none=True)
        checks.check_count("max_restarts", max_restarts, 0, allow_none=True)
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        for name, value in (("on_process_up", on_process_up), ("on_process_down", on_process_down),
                            ("on_process_exit", on_process_exit), ("on_timeout_set", on_timeout_set),
                            ("on_timeout_cancel", on_timeout_cancel)):
            checks.check_callable(name, value)
        checks.check_seconds("lost_worker_timeout", lost_worker_timeout)
        if context is None:
            context = multiprocessing.get_context()
        config = PoolConfig(
            processes=processes,
            context=context,
            initializer=pickling.portable(initializer) if initializer is not None else None,
            initargs=tuple(initargs),
            maxtasksperchild=maxtasksperchild,
            max_memory_per_child=max_memory_per_child,
            soft_timeout=checks.check_seconds("soft_timeout", soft_timeout),
            timeout=checks.check_seconds("timeout", timeout),
            memory_limit=checks.parse_size("memory_limit", memory_limit),
            memory_poll_interval=checks.check_seconds("memory_poll_interval", memory_poll_interval)
            or 0.05,
            max_restarts=max_restarts,
            max_restart_freq=checks.check_seconds("max_restart_freq", max_restart_freq) or 1.0,
            on_process_up=on_process_up,
            on_process_down=on_process_down,
            on_process_exit=on_process_exit,
            on_timeout_set=on_timeout_set,
            on_timeout_cancel=on_timeout_cancel,
            shm_threshold=checks.parse_size("shm_threshold", shm_threshold),
        )
        self._config = config
        self._results: dict[int, Any] = {}  # results not ready yet, by _job: see _cache
        self._supervisor = Supervisor(config)
        self._supervisor.start()
        self._metrics: MetricsServer | None = None
        if metrics_port is not None:
            try:
                # The `metrics` extra, imported only when asked for (pyproject's
                # engine-deps contract); it reads stats() through a weak
                # reference, so that serving never keeps the pool alive.
                from poolx.metrics import serve

                self._metrics = serve(_weak_stats(weakref.ref(self)), port=metrics_port,
                                      bind=metrics_bind)
            except BaseException:
                _shutdown(self._supervisor)
                raise
        self._finalizer = weakref.finalize(self, _shutdown, self._supervisor, self._metrics)
        self._run_state = RUN

    # ------------------------------------------------------------------ helpers

    def _check_running(self) -> None:
        if self._run_state != RUN:
            raise PoolNotRunning()

    def _job(
        self,
        sink: Any,
        index: int,
        func: Callable[..., Any],
        args: Any,
        kwds: Any,
        mode: int,
        soft_timeout: float | None,
        timeout: float | None,
        memory_limit: int | None,
        flags: int = 0,
        seq: int | None = None,
        late: bool = False,
    ) -> Job:
        """A job for ``func(*args, **kwds)``, its call pickled now — or, with
        ``late`` and many pickled arguments waiting to be sent
        (:data:`~poolx.engine.supervisor.EAGER_BYTES`), later by the pool's
        pickler thread (:mod:`poolx.engine.late`; an argument that cannot be
        pickled then fails the job)."""
        supervisor = self._supervisor
        data: bytes | None = None
        if not late or supervisor.waiting_bytes < supervisor.eager_bytes:
            data, extra = supervisor.segments.job_payload(func, args, kwds, mode)
            flags |= extra
        job = Job(
            supervisor.next_seq() if seq is None else seq,
            sink,
            index,
            data,
            flags,
            soft_timeout if soft_timeout is not None else self._config.soft_timeout,
            timeout if timeout is not None else self._config.timeout,
            memory_limit if memory_limit is not None else self._config.memory_limit,
            task_name(func),
        )
        if data is None:
            job.call = (func, args, kwds, mode)
        return job

    def _submit(self, jobs: list[Job]) -> None:
        try:
            self._supervisor.submit(jobs)
        except ValueError:
            raise PoolNotRunning() from None

    @staticmethod
    def _limits(soft_timeout: Any, timeout: Any, memory_limit: Any) -> tuple[Any, Any, Any]:
        return (
            checks.check_seconds("soft_timeout", soft_timeout),
            checks.check_seconds("timeout", timeout),
            checks.parse_size("memory_limit", memory_limit),
        )

    def _chunksize(self, chunksize: Any, length: int) -> int:
        if chunksize is None:
            workers = max(1, self._supervisor.target)
            chunksize, extra = divmod(length, workers * 4)
            return chunksize + 1 if extra else max(chunksize, 1)
        return _check_chunksize(chunksize)

    # ------------------------------------------------------------------ apply

    def apply(self, func: Callable[..., Any], args: Iterable[Any] = (), kwds: dict[str, Any] | None = None,
              **extras: Any) -> Any:
        """Call ``func(*args, **kwds)`` in a worker and return its result."""
        return self.apply_async(func, args, kwds, **extras).get()

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: dict[str, Any] | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
        accept_callback: Callable[[int, float], Any] | None = None,
        timeout_callback: Callable[..., Any] | None = None,
        waitforslot: Any = None,
        soft_timeout: float | None = None,
        timeout: float | None = None,
        lost_worker_timeout: float | None = None,
        callbacks_propagate: Any = (),
        correlation_id: Any = None,
        memory_limit: int | str | None = None,
    ) -> ApplyResult:
        """Run ``func(*args, **kwds)`` in a worker; return an :class:`ApplyResult`.

        ``callback(result)`` or ``error_callback(exception)`` runs in the pool's
        callback thread.  ``soft_timeout``, ``timeout`` and ``memory_limit``
        apply to this call and override the pool's defaults.  billiard's
        ``accept_callback(pid, time_accepted)`` and
        ``timeout_callback(soft=, timeout=)`` are supported;
        ``waitforslot``, ``lost_worker_timeout`` and ``callbacks_propagate`` are
        accepted and have no effect.
        """
        self._check_running()
        if soft_timeout is not None or timeout is not None or memory_limit is not None:
            soft_timeout, timeout, memory_limit = self._limits(soft_timeout, timeout, memory_limit)
        if callback is not None or error_callback is not None or accept_callback is not None \
                or timeout_callback is not None:
            for name, value in (("callback", callback), ("error_callback", error_callback),
                                ("accept_callback", accept_callback),
                                ("timeout_callback", timeout_callback)):
                checks.check_callable(name, value)
        seq = self._supervisor.next_seq()
        result = ApplyResult(self._supervisor.runner, callback, error_callback, accept_callback,
                             timeout_callback, correlation_id, self._terminate_job_of_result, seq,
                             cache=self._results, pool=self)
        try:
            job = self._job(result, 0, pickling.portable(func), *_call_arguments(func, args, kwds), wire.APPLY,
                            soft_timeout, timeout, memory_limit,
                            wire.FLAG_ACK if accept_callback is not None else 0, seq, late=True)
        except Exception as exc:  # unpicklable arguments fail this call only
            result.job_done(0, False, exc)
            return result
        self._submit([job])
        return result

    def submit_job(
        self,
        sink: JobSink,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: dict[str, Any] | None = None,
        *,
        soft_timeout: float | None = None,
        timeout: float | None = None,
        memory_limit: int | str | None = None,
    ) -> int:
        """Run ``func(*args, **kwds)`` and report to ``sink``; return the job's seq.

        The low-level form of :meth:`apply_async` for poolx's own front ends
        (the ``concurrent.futures`` executor): no result object and no hop
        through the callback thread.  ``sink`` implements
        :class:`~poolx.engine.results.JobSink`; its methods are called on the
        supervisor thread, so they must be quick and must not raise.  An
        argument that cannot be pickled raises here.  The seq identifies the
        job to :meth:`terminate_job`.
        """
        self._check_running()
        job = self._sink_job(sink, func, args, kwds, soft_timeout, timeout, memory_limit)
        self._submit([job])
        return job.seq

    def submit_jobs(
        self,
        calls: Iterable[tuple[JobSink, Callable[..., Any], Iterable[Any],
                              float | None, float | None, int | str | None]],
    ) -> list[int | Exception]:
        """:meth:`submit_job` for several calls, handed to the supervisor
        together: one wake-up of its thread for the lot, where a loop of
        ``submit_job`` may wake it (and have it write to a worker) per call.

        Each call is ``(sink, func, args, soft_timeout, timeout,
        memory_limit)``.  Returns, in order, each call's job seq — or the
        exception that call raised (an argument that cannot be pickled, an
        invalid limit), in which case that call is not submitted and the
        others are.

        :raises PoolNotRunning: the pool is closed or terminated: no call
            was submitted.
        """
        self._check_running()
        jobs = []
        seqs: list[int | Exception] = []
        for sink, func, args, soft_timeout, timeout, memory_limit in calls:
            try:
                job = self._sink_job(sink, func, args, None, soft_timeout, timeout, memory_limit)
            except Exception as exc:
                seqs.append(exc)
                continue
            jobs.append(job)
            seqs.append(job.seq)
        if jobs:
            self._submit(jobs)
        return seqs

    def _sink_job(self, sink: JobSink, func: Callable[..., Any], args: Iterable[Any], kwds: Any,
                  soft_timeout: Any, timeout: Any, memory_limit: Any) -> Job:
        """The job of one :meth:`submit_job` call (pickled now)."""
        if soft_timeout is not None or timeout is not None or memory_limit is not None:
            soft_timeout, timeout, memory_limit = self._limits(soft_timeout, timeout, memory_limit)
        return self._job(sink, 0, pickling.portable(func), *_call_arguments(func, args, kwds), wire.APPLY,
                         soft_timeout, timeout, memory_limit)

    # ------------------------------------------------------------------ map

    def map(self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int | None = None,
            *, progress_bar: ProgressOption = False, **limits: Any) -> list[Any]:
        """Apply ``func`` to every item, in parallel; return the results in order.

        ``progress_bar`` (a poolx extension): ``True``, or a dict of tqdm
        options, shows a bar counting the items (:doc:`observing`).
        """
        return self._map_async(func, iterable, chunksize, None, None, wire.MAP, limits, "map",
                               progress_bar, bounded=True).get()

    def map_async(self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int | None = None,
                  callback: Callable[[Any], Any] | None = None,
                  error_callback: Callable[[BaseException], Any] | None = None,
                  *, progress_bar: ProgressOption = False, **limits: Any) -> MapResult:
        """Asynchronous :meth:`map`; returns a :class:`MapResult`.

        ``soft_timeout``, ``timeout`` and ``memory_limit`` (keyword-only)
        apply to each *chunk*; pass ``chunksize=1`` for per-item limits.
        ``progress_bar`` as in :meth:`map`: the bar closes when the result
        is ready (at the latest when ``get()`` or ``wait()`` returns it).
        """
        return self._map_async(func, iterable, chunksize, callback, error_callback, wire.MAP, limits,
                               "map_async", progress_bar)

    def starmap(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                chunksize: int | None = None, *, progress_bar: ProgressOption = False,
                **limits: Any) -> list[Any]:
        """Like :meth:`map`, but each item is unpacked: ``func(*item)``."""
        return self._map_async(func, iterable, chunksize, None, None, wire.STARMAP, limits, "starmap",
                               progress_bar, bounded=True).get()

    def starmap_async(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                      chunksize: int | None = None, callback: Callable[[Any], Any] | None = None,
                      error_callback: Callable[[BaseException], Any] | None = None,
                      *, progress_bar: ProgressOption = False, **limits: Any) -> MapResult:
        """Asynchronous :meth:`starmap`."""
        return self._map_async(func, iterable, chunksize, callback, error_callback, wire.STARMAP, limits,
                               "starmap_async", progress_bar)

    def _map_async(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: Any,
                   callback: Any, error_callback: Any, mode: int, limits: dict[str, Any],
                   method: str, progress_bar: Any = False, bounded: bool = False) -> MapResult:
        """Cut, pickle and submit the chunks.  ``bounded`` (``map``/``starmap``,
        whose caller waits anyway): pickle at most ``MAP_PICKLED_AHEAD`` bytes
        (and at least 2 chunks per worker) beyond the finished chunks, so the
        pickled input never all sits in memory beside the results (the
        standard library pickles as it sends).  Once the map has failed, the
        remaining chunks are submitted at once: every item still runs, as in
        the standard library."""
        self._check_running()
        soft_timeout, timeout, memory_limit = self._limits(**_limit_kwargs(limits, method))
        checks.check_callable("callback", callback)
        checks.check_callable("error_callback", error_callback)
        # As the standard library does: a sized input is used as it is (no
        # copy), anything else read into a list; chunks are cut as they are
        # pickled, so no second copy of the input exists at any time.
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        length = len(iterable)
        size = self._chunksize(chunksize, length)
        count = -(-length // size)
        lengths = [size] * count
        if count:
            lengths[-1] = length - size * (count - 1)
        tracker = open_tracker(progress_bar, length, "progress_bar")
        result = MapResult(self._supervisor.runner, lengths, callback, error_callback, size, self._results,
                           pool=self, tracker=tracker)
        del lengths
        if not count:
            return result
        try:
            self._submit_chunks(result, func, iterable, length, size, count, mode,
                                (soft_timeout, timeout, memory_limit), bounded)
        except BaseException:
            if tracker is not None:
                tracker.close()
            raise
        return result

    def _submit_chunks(self, result: MapResult, func: Callable[..., Any], iterable: Any, length: int,
                       size: int, count: int, mode: int, limits: tuple[Any, Any, Any],
                       bounded: bool) -> None:
        soft_timeout, timeout, memory_limit = limits
        func = pickling.portable(func)
        if isinstance(iterable, (list, tuple)):
            sequence = iterable
            chunks: Iterator[Any] = (sequence[i : i + size] for i in range(0, length, size))
        else:
            iterator = iter(iterable)
            chunks = (list(itertools.islice(iterator, size)) for _ in range(count))
        # Submit as we pickle, so workers start on the first chunks at once;
        # groups grow so that huge maps are not one wake-up per chunk.
        group: list[Job] = []
        group_size = 1
        min_ahead = max(2, 2 * self._supervisor.target)
        pickled = 0
        if bounded:
            result.track_progress()
        for i, chunk in enumerate(chunks):
            if bounded and i >= min_ahead:
                ahead = max(min_ahead, MAP_PICKLED_AHEAD * i // max(pickled, 1))
                if i >= ahead:
                    if group:
                        self._submit(group)
                        group = []
                    if not result.wait_chunks(i - ahead + 1):
                        bounded = False  # the map failed: the rest still runs, as in the standard library
            try:
                job = self._job(result, i, func, chunk, None, mode, soft_timeout, timeout, memory_limit)
                pickled += len(job.payload or b"")
                group.append(job)
            except Exception as exc:  # an unpicklable item fails the map, not the pool
                result.job_done(i, False, exc)
                break
            if len(group) >= group_size:
                self._submit(group)
                group = []
                group_size = min(group_size * 2, 64)
        if group:
            self._submit(group)

    # ------------------------------------------------------------------ imap

    def imap(self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int = 1, *,
             window: int | None = None, progress_bar: ProgressOption = False,
             **limits: Any) -> IMapIterator:
        """Lazy :meth:`map`: an iterator of results in input order.

        ``next(timeout)`` raises :class:`poolx.TimeoutError` when no result
        arrives in time.  Limits apply per chunk (per item with the default
        ``chunksize=1``).  At most ``window`` chunks (default 256, or 4 per
        worker if more) are read and submitted beyond those whose results the
        caller has taken: a slow consumer pauses the feeder, then the workers.
        ``progress_bar`` as in :meth:`map`; its total is unknown (the bar
        counts up) when the input has no ``len()`` and no ``total`` option
        is given.
        """
        return self._imap(IMapIterator, func, iterable, chunksize, window, limits, "imap", progress_bar)

    def imap_unordered(self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int = 1, *,
                       window: int | None = None, progress_bar: ProgressOption = False,
                       **limits: Any) -> IMapIterator:
        """Like :meth:`imap`, but results come in completion order."""
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize, window, limits,
                          "imap_unordered", progress_bar)

    def _imap(self, kind: type[IMapIterator], func: Callable[..., Any], iterable: Iterable[Any],
              chunksize: Any, window: Any, limits: dict[str, Any], method: str,
              progress_bar: Any) -> IMapIterator:
        self._check_running()
        _check_chunksize(chunksize)
        if window is None:
            window = max(IMAP_WINDOW, 4 * self._supervisor.target)
        else:
            checks.check_count("window", window, 1)
        limit_values = self._limits(**_limit_kwargs(limits, method))
        func = pickling.portable(func)
        tracker = (open_tracker(progress_bar, _length_hint(iterable), "progress_bar")
                   if progress_bar is not False else None)  # no bar: the input's len() is not asked
        sink = kind(self._results, self, tracker, chunksize)
        # An input already in memory (it has a length) is fed in groups of
        # jobs; a lazy one (a generator, a socket...) job by job, so that no
        # item waits for the next one to be produced.
        group_size = IMAP_GROUP if hasattr(iterable, "__len__") else 1
        self._supervisor.feeder_started()
        feeder = threading.Thread(
            target=self._feed,
            args=(sink, func, iterable, chunksize, limit_values, group_size, window),
            name="poolx-feeder", daemon=True,
        )
        feeder.start()
        return sink

    def _feed(self, sink: IMapIterator, func: Callable[..., Any], iterable: Iterable[Any],
              chunksize: int, limits: tuple[Any, Any, Any], group_size: int, window: int) -> None:
        """Feeder thread: read the input lazily, one chunk at a time.

        It stays at most ``window`` chunks ahead of those the caller has
        taken, so a huge (or endless) input is never materialized, results
        never pile up for a slow consumer, and the feeder does not starve the
        supervisor of the GIL.  Once the pool is closing, the window is
        released: the feeder finishes the input (as the standard library's
        does), staying at most ``IMAP_AHEAD`` chunks ahead of completed ones.
        """
        try:
            try:
                iterator = iter(iterable)
            except Exception as exc:  # not iterable: raised by next(), as the standard library does
                sink.set_chunk_items(0, 1)
                sink.job_done(0, False, exc)
                sink.set_length(1)
                return
            self._feed_chunks(sink, func, iterator, chunksize, limits, group_size, window)
        finally:
            self._supervisor.feeder_finished()

    def _feed_chunks(self, sink: IMapIterator, func: Callable[..., Any], iterator: Iterator[Any],
                     chunksize: int, limits: tuple[Any, Any, Any], group_size: int,
                     window: int) -> None:
        ahead = max(IMAP_AHEAD, 4 * self._supervisor.target)
        index = 0
        group: list[Job] = []

        def flush() -> bool:
            try:
                if group:
                    self._submit(group)
                return True
            except ValueError:  # the pool was terminated meanwhile
                for job in group:
                    sink.job_done(job.index, False, PoolTerminated(False))
                sink.set_length(group[-1].index + 1)
                return False
            finally:
                group.clear()

        while True:
            if index - sink.consumed() >= window and not sink.window_released:
                if not flush():
                    return
                sink.wait_consumed(index - window + 1)
            if index - sink.completed() >= ahead:
                if not flush():
                    return
                sink.wait_completed(index - ahead + 1)
            try:
                chunk = list(itertools.islice(iterator, chunksize))
            except Exception as exc:  # the input raised: that is the last "item"
                if flush():
                    sink.set_chunk_items(index, 1)
                    sink.job_done(index, False, exc)
                    sink.set_length(index + 1)
                return
            if not chunk:
                if flush():
                    sink.set_length(index)
                return
            if len(chunk) < chunksize:  # the last chunk
                sink.set_chunk_items(index, len(chunk))
            try:
                group.append(self._job(sink, index, func, chunk, None, wire.MAP, *limits))
            except Exception as exc:  # an unpicklable item fails its own position
                sink.job_done(index, False, exc)
            if len(group) >= group_size and not flush():
                return
            index += 1

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Accept no more jobs; workers exit once the submitted ones are done."""
        if self._run_state == RUN:
            self._run_state = CLOSE  # new calls are refused; imap feeders finish their input
            self._release_imap_windows()
            self._supervisor.post(self._supervisor.close)

    def terminate(self) -> None:
        """Stop now: cancel pending jobs (they fail with ``Terminated``) and
        kill the workers (SIGTERM, then SIGKILL).  Returns when they are gone."""
        self._run_state = TERMINATE
        self._finalizer.detach()
        _shutdown(self._supervisor, self._metrics)
        self._release_imap_windows()  # their feeders then find the pool stopped

    def _release_imap_windows(self) -> None:
        for result in list(self._results.values()):
            if isinstance(result, IMapIterator):
                result.release_window()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the workers to exit after :meth:`close` or :meth:`terminate`.

        ``timeout`` (a poolx extension) bounds the wait; returns whether the
        pool has fully stopped.
        """
        if self._run_state == RUN:
            raise ValueError("Pool is still running")
        self._supervisor.thread.join(timeout)
        stopped = not self._supervisor.thread.is_alive()
        if stopped:
            self._finalizer.detach()
            if self._metrics is not None:
                self._metrics.close()
            self._supervisor.runner.join(timeout)
        return stopped

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.terminate()

    def __reduce__(self) -> Any:
        raise NotImplementedError(
            "pool objects cannot be passed between processes or pickled"
        )

    def __del__(self) -> None:
        supervisor = getattr(self, "_supervisor", None)
        if getattr(self, "_run_state", None) == RUN and supervisor is not None and supervisor.in_owner():
            warnings.warn(f"unclosed running pool {self!r}", ResourceWarning, source=self, stacklevel=1)

    def __repr__(self) -> str:
        return (f"<{type(self).__module__}.{type(self).__qualname__} "
                f"state={self._run_state} pool_size={self._supervisor.target}>")

    # ------------------------------------------------------------------ billiard's control API

    def grow(self, n: int = 1) -> None:
        """Add ``n`` worker processes."""
        self._check_running()
        checks.check_count("n", n, 0)
        self._supervisor.post(self._supervisor.grow, n)

    def shrink(self, n: int = 1) -> None:
        """Remove ``n`` workers: idle ones at once, busy ones after their current job."""
        self._check_running()
        checks.check_count("n", n, 0)

        def shrink(sup: Supervisor) -> None:
            if n > sup.target:
                raise ValueError(f"cannot shrink the pool by {n}: it has {sup.target} processes")
            sup.shrink(n)

        self._supervisor.call(shrink)

    def restart(self) -> None:
        """Replace every worker; running jobs finish first, and no old worker
        starts a new job after this call."""
        self._check_running()
        self._supervisor.call(Supervisor.restart)

    def terminate_job(self, pid: int, sig: int | None = None, seq: int | None = None) -> None:
        """Kill worker ``pid`` with ``sig`` (default SIGTERM) if it is running a
        job; that job fails with ``Terminated(sig)``.  With ``seq`` (a poolx
        extension; see :meth:`submit_job`), only if that job is the one running."""
        self._supervisor.post(self._supervisor.terminate_job, pid, _signal(sig), seq)

    def _terminate_job_of_result(self, pid: int, sig: int | None, seq: int) -> None:
        """``ApplyResult.terminate``: acts only while that very job runs."""
        self._supervisor.post(self._supervisor.terminate_job, pid, _signal(sig), seq)

    def maintain_pool(self) -> None:
        """Replace exited workers now (the supervisor also does so by itself)."""
        self._supervisor.call(Supervisor.maintain)

    def did_start_ok(self) -> bool:
        """False once the pool is broken (e.g. the initializer keeps failing)."""
        return self._supervisor.broken is None

    def cpu_count(self) -> int:
        """The number of CPUs of this machine."""
        return os.cpu_count() or 1

    @property
    def process_sentinels(self) -> list[int]:
        """The sentinels (fds) of the live worker processes."""
        return self._supervisor.call(lambda sup: sup.workers.sentinels())

    @property
    def processes(self) -> int:
        """The number of worker processes the pool keeps (after :meth:`grow`
        and :meth:`shrink`)."""
        return self._supervisor.target

    # ------------------------------------------------------------------ the standard library's private attributes
    # Read-only, with the standard library's meaning, because real code reads
    # them (see "Compatibility attributes" in docs/migrating-multiprocessing.rst).

    @property
    def _processes(self) -> int:
        """The number of worker processes the pool keeps (:attr:`processes`)."""
        return self._supervisor.target

    @property
    def _pool(self) -> list[Any]:
        """A new list of the live worker process objects (``multiprocessing.Process``):
        a worker leaves it once the pool has reaped it, as in ``stats()["workers"]``."""
        return list(self._supervisor.workers.processes)

    @property
    def _state(self) -> str:
        """``"INIT"``, ``"RUN"``, ``"CLOSE"`` or ``"TERMINATE"`` (``multiprocessing.pool``'s constants)."""
        return self._run_state

    @property
    def _cache(self) -> Mapping[int, Any]:
        """A read-only view of the results not ready yet, by their ``_job``."""
        return MappingProxyType(self._results)

    def stats(self) -> dict[str, Any]:
        """A snapshot: per worker pid, state, current job, tasks done, RSS and
        uptime; pool totals (submitted, completed, failed, timed_out, lost,
        memory_killed, restarts...); and under ``"tasks"``, per function
        (``module.qualname``), the jobs that started, succeeded and failed (by
        outcome) and a histogram of their run times (see
        :meth:`poolx.tally.TaskTally.snapshot`).  :mod:`poolx.metrics`
        serves it to Prometheus."""
        return self._supervisor.call(Supervisor.snapshot)

    @property
    def metrics_server(self) -> MetricsServer | None:
        """The :class:`poolx.metrics.MetricsServer` that ``metrics_port``
        started (its ``port`` and ``url``), or None."""
        return self._metrics

    @property
    def broken(self) -> exceptions.BrokenPoolError | None:
        """Why the pool cannot run jobs, or None."""
        return self._supervisor.broken  # type: ignore[return-value]


def _weak_stats(ref: weakref.ref[Pool]) -> Callable[[], dict[str, Any]]:
    """The stats of the pool ``ref`` points to ({} once it is gone)."""

    def stats() -> dict[str, Any]:
        pool = ref()
        return {} if pool is None else pool.stats()

    return stats


def _signal(sig: Any) -> int:
    """``sig`` as a signal number (SIGTERM for None); ValueError, in the
    caller's thread, for anything that is not a signal of this platform."""
    if sig is None:
        return int(signal_module.SIGTERM)
    if isinstance(sig, bool) or not isinstance(sig, int):
        raise TypeError(f"the signal must be an int or None, not {type(sig).__name__}")
    try:
        return int(signal_module.Signals(sig))
    except ValueError:
        raise ValueError(f"invalid signal number: {sig}") from None


def _length_hint(iterable: Any) -> int | None:
    """The number of items of an input that has a ``len()``, else None."""
    try:
        return len(iterable)
    except Exception:
        return None


def _limit_kwargs(limits: dict[str, Any], method: str) -> dict[str, Any]:
    for name in limits:
        if name not in ("soft_timeout", "timeout", "memory_limit"):  # Python's own wording
            raise TypeError(f"Pool.{method}() got an unexpected keyword argument {name!r}")
    return {"soft_timeout": limits.get("soft_timeout"), "timeout": limits.get("timeout"),
            "memory_limit": limits.get("memory_limit")}


# Argument checks with the standard library's exception types and wording
# (Lib/multiprocessing/pool.py), where it has a check of its own.

def _check_processes(processes: Any) -> None:
    if not isinstance(processes, int) or isinstance(processes, bool):
        raise TypeError(f"processes must be an int, not {type(processes).__name__} ({processes!r})")
    if processes < 0:  # the standard library says "at least 1": poolx allows an empty pool
        raise ValueError("Number of processes must be at least 0")


def _check_maxtasksperchild(maxtasksperchild: Any) -> None:
    if maxtasksperchild is not None and (
        not isinstance(maxtasksperchild, int) or isinstance(maxtasksperchild, bool) or maxtasksperchild <= 0
    ):
        raise ValueError("maxtasksperchild must be a positive int or None")


def _check_chunksize(chunksize: Any) -> int:
    if not isinstance(chunksize, int) or isinstance(chunksize, bool):
        raise TypeError(f"chunksize must be an int, not {type(chunksize).__name__} ({chunksize!r})")
    if chunksize < 1:
        raise ValueError(f"Chunksize must be 1+, not {chunksize!r}")
    return chunksize


def _call_arguments(func: Any, args: Any, kwds: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``args`` and ``kwds`` as a tuple and a dict; what ``func(*args, **kwds)``
    would raise (Python's wording, which the standard library's ``get()`` shows)
    if they are not an iterable and a mapping."""
    try:
        args = tuple(args)
    except TypeError:
        raise TypeError(f"{_function_str(func)} argument after * must be an iterable, "
                        f"not {type(args).__name__}") from None
    if kwds is None:
        return args, {}
    if not hasattr(kwds, "keys"):
        raise TypeError(f"{_function_str(func)} argument after ** must be a mapping, "
                        f"not {type(kwds).__name__}")
    return args, dict(kwds)


def _function_str(func: Any) -> str:
    """How CPython names a function in call errors (``_PyObject_FunctionStr``)."""
    qualname = getattr(func, "__qualname__", None)
    if not isinstance(qualname, str):
        return str(func)
    module = getattr(func, "__module__", None)
    if isinstance(module, str) and module != "builtins":
        return f"{module}.{qualname}()"
    return f"{qualname}()"

"""Prometheus metrics for pools and worker pools, read from ``stats()`` at scrape time.

Who owns what: this module owns the mapping from a ``stats()`` snapshot to
Prometheus metric families (:data:`METRICS` lists them all) and the HTTP
server that serves them (:class:`MetricsServer`).  It keeps no count of its
own: :meth:`poolx.Pool.stats` and :meth:`poolx.pool.process.WorkerPool.stats`
stay the source of truth, and :class:`StatsCollector` calls them only when
Prometheus scrapes, so an exporter nobody scrapes costs nothing but an idle
server thread.

Who talks to whom::

    Prometheus ──GET /metrics──▶ MetricsServer (prometheus_client's HTTP server, own thread)
                                   └─▶ StatsCollector.collect()
                                         └─▶ source.stats() for every source ──▶ metric families

Layering: this module imports only the standard library, :mod:`poolx.tally`
and (lazily, when a collector or server is made) ``prometheus_client``, the
``metrics`` extra.  It sits just below the engine so that
``Pool(metrics_port=...)`` can import it when asked to; the worker pools and
``poolx worker --metrics-port`` use it from above.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from poolx.exceptions import ExtraNotInstalled
from poolx.tally import DURATION_BUCKETS, FAILURE_OUTCOMES

log = logging.getLogger("poolx.metrics")

__all__ = ["METRICS", "Metric", "MetricsServer", "StatsCollector", "serve"]


WORKER_STATES = ("busy", "idle", "starting", "retiring")
"""The ``state`` label values of ``poolx_workers`` (always all present)."""


class Metric(NamedTuple):
    """One exported metric.

    :param name: Its name as scraped (counters end in ``_total``).
    :param type: ``counter``, ``gauge`` or ``histogram``.
    :param labels: Its labels, without the ``queue`` label every metric of
        a worker pool carries.
    :param help: The text Prometheus shows for it.
    :param worker_pool_only: Whether only worker pools export it.
    """

    name: str
    type: str
    labels: tuple[str, ...]
    help: str
    worker_pool_only: bool = False


METRICS: tuple[Metric, ...] = (
    Metric("poolx_tasks_started_total", "counter", ("task",),
           "Tasks that started running in a worker."),
    Metric("poolx_tasks_succeeded_total", "counter", ("task",),
           "Tasks that returned a value."),
    Metric("poolx_tasks_failed_total", "counter", ("task", "outcome"),
           "Tasks that started and failed, by outcome: error, timeout, memory, lost, terminated."),
    Metric("poolx_task_duration_seconds", "histogram", ("task",),
           "Run time of the tasks that returned or raised in their worker."),
    Metric("poolx_workers", "gauge", ("state",),
           "Worker processes by state: busy, idle, starting, retiring."),
    Metric("poolx_workers_started_total", "counter", (),
           "Worker processes started, replacements included."),
    Metric("poolx_worker_restarts_total", "counter", (),
           "Workers that died unexpectedly after they were ready (and were replaced)."),
    Metric("poolx_jobs_queued", "gauge", (),
           "Jobs submitted to the pool that no worker holds yet."),
    Metric("poolx_pool_broken", "gauge", (),
           "1 if the pool cannot run tasks any more, else 0."),
    Metric("poolx_queue_depth", "gauge", (),
           "Tasks waiting in the task queue.", True),
    Metric("poolx_tasks_prefetched", "gauge", (),
           "Tasks this worker pool took from the queue that are not running yet.", True),
    Metric("poolx_redis_reconnects_total", "counter", (),
           "Redis operations that succeeded after Redis had been unreachable (redis:// only).",
           True),
)


def _prometheus() -> Any:
    """``prometheus_client``, or an ImportError naming the extra."""
    try:
        import prometheus_client
        import prometheus_client.core
        import prometheus_client.utils
    except ImportError as err:
        raise ExtraNotInstalled("poolx metrics", "prometheus_client", "metrics") from err
    return prometheus_client


def _stats_reader(source: Any) -> Callable[[], dict[str, Any]]:
    stats = getattr(source, "stats", None)
    if callable(stats):
        return stats  # type: ignore[no-any-return]
    if callable(source):
        return source  # type: ignore[no-any-return]
    raise TypeError(f"a metrics source has a stats() method or is a callable returning its "
                    f"stats, not {type(source).__name__}")


class StatsCollector:
    """A ``prometheus_client`` collector reading each source's ``stats()``
    at every scrape.

    :param sources: Objects with a ``stats()`` method (:class:`poolx.Pool`,
        :class:`~poolx.pool.process.WorkerPool`,
        :class:`poolx.ProcessPoolExecutor`) or callables returning
        such a snapshot.  A snapshot with a ``"queue"`` key (a worker
        pool's) labels every sample with ``queue`` (``""`` for a plain pool
        served beside worker pools); with several sources, every sample also
        has a ``pool`` label, the source's position (``"0"``, ``"1"``...),
        so that no two sources give the same series.  A source whose stats
        cannot be read (a worker pool not started) is skipped.
    """

    def __init__(self, *sources: Any) -> None:
        prometheus = _prometheus()
        self._core = prometheus.core
        # Bucket bounds as prometheus_client writes them ("1.0", not "1").
        self._bounds = [*map(prometheus.utils.floatToGoString, DURATION_BUCKETS), "+Inf"]
        self._readers = [_stats_reader(source) for source in sources]
        self._numbered = len(self._readers) > 1

    def describe(self) -> Iterator[Any]:
        """The metric families without samples (so that registering a
        collector never calls ``stats()``)."""
        return iter(self._families(queue=False).values())

    def _families(self, queue: bool) -> dict[str, Any]:
        core = self._core
        kinds = {"counter": core.CounterMetricFamily, "gauge": core.GaugeMetricFamily,
                 "histogram": core.HistogramMetricFamily}
        base = (("pool",) if self._numbered else ()) + (("queue",) if queue else ())
        families = {}
        for metric in METRICS:
            labels = base + metric.labels
            name = metric.name.removesuffix("_total") if metric.type == "counter" else metric.name
            families[metric.name] = kinds[metric.type](name, metric.help, labels=list(labels))
        return families

    def collect(self) -> Iterator[Any]:
        """One scrape: every source's stats as metric families (those with
        samples: a metric appears once there is something to say)."""
        snapshots = []
        for index, read in enumerate(self._readers):
            try:
                stats = read()
            except Exception:  # not started, or stopped: nothing to say about it
                log.debug("metrics: a source's stats cannot be read", exc_info=True)
                continue
            if stats:
                snapshots.append((index, stats))
        queue = any("queue" in stats for _, stats in snapshots)
        families = self._families(queue)
        for index, stats in snapshots:
            base = [str(index)] if self._numbered else []
            if queue:
                base.append(str(stats.get("queue", "")))
            _add_samples(families, stats, base, self._bounds)
        return iter([family for family in families.values() if family.samples])


def _add_samples(families: dict[str, Any], stats: dict[str, Any], base: list[str],
                 bounds: list[str]) -> None:
    for name, counts in sorted(stats.get("tasks", {}).items()):
        labels = [*base, name]
        families["poolx_tasks_started_total"].add_metric(labels, counts["started"])
        families["poolx_tasks_succeeded_total"].add_metric(labels, counts["succeeded"])
        for outcome in FAILURE_OUTCOMES:
            families["poolx_tasks_failed_total"].add_metric(
                [*labels, outcome], counts["failed"][outcome])
        duration = counts["duration"]
        families["poolx_task_duration_seconds"].add_metric(
            labels, list(zip(bounds, duration["buckets"], strict=True)), duration["sum"])
    states = dict.fromkeys(WORKER_STATES, 0)
    for worker in stats.get("workers", []):
        if worker["state"] in states:
            states[worker["state"]] += 1
    for state, count in states.items():
        families["poolx_workers"].add_metric([*base, state], count)
    families["poolx_workers_started_total"].add_metric(base, stats.get("workers_started", 0))
    families["poolx_worker_restarts_total"].add_metric(base, stats.get("restarts", 0))
    families["poolx_jobs_queued"].add_metric(base, stats.get("queued", 0))
    families["poolx_pool_broken"].add_metric(base, 1 if stats.get("broken") else 0)
    if "queue" not in stats:
        return
    if stats.get("queue_depth") is not None:
        families["poolx_queue_depth"].add_metric(base, stats["queue_depth"])
    families["poolx_tasks_prefetched"].add_metric(base, stats.get("prefetched", 0))
    if stats.get("reconnects") is not None:
        families["poolx_redis_reconnects_total"].add_metric(base, stats["reconnects"])


class MetricsServer:
    """An HTTP server answering Prometheus scrapes on its own thread (any
    path serves the metrics; ``/metrics`` is the usual one).  Made by
    :func:`serve`; stop it with :meth:`close` (or a ``with`` block).

    :param collector: What it serves (in a registry of its own).
    :param port: TCP port (0: a free one).
    :param bind: Address to listen on.
    """

    def __init__(self, collector: StatsCollector, port: int, bind: str) -> None:
        prometheus = _prometheus()
        self.registry = prometheus.CollectorRegistry()
        self.registry.register(collector)
        self._server, self._thread = prometheus.start_http_server(port, bind, self.registry)
        self._lock = threading.Lock()
        self._closed = False

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the server listens on (the real port when 0 was asked)."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return self.address[1]

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        host, port = self.address
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/metrics"

    def close(self) -> None:
        """Stop serving and free the port (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._server.shutdown()  # at serve_forever's next poll: up to 0.5 s
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.url
        return f"<MetricsServer {state}>"


def serve(*sources: Any, port: int = 0, bind: str = "127.0.0.1") -> MetricsServer:
    """Serve Prometheus metrics for ``sources`` on ``bind:port`` until the
    returned server is closed.

    :param sources: See :class:`StatsCollector`.
    :param port: TCP port (0: a free one, see :attr:`MetricsServer.port`).
    :param bind: Address to listen on; the default, the loopback address,
        keeps the metrics off the network.
    :raises ImportError: without ``prometheus_client`` (the ``metrics`` extra).
    :raises OSError: if the port cannot be bound.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"metrics port must be an int from 0 to 65535, not {port!r}")
    if not isinstance(bind, str) or not bind:
        raise ValueError(f"metrics bind address must be a non-empty str, not {bind!r}")
    return MetricsServer(StatsCollector(*sources), port, bind)

"""Prometheus metrics (poolx.metrics): served by Pool(metrics_port=...) and
WorkerPool(metrics_port=...), scraped over HTTP and parsed with
prometheus_client's own parser, so what is checked is what Prometheus reads."""

from __future__ import annotations

import gc
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import weakref
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import poolx
from poolx import metrics, tally
from poolx.core import get_broker
from poolx.exceptions import (
    MemoryLimitExceeded,
    SoftTimeLimitExceeded,
    Terminated,
    TimeLimitExceeded,
    WorkerLostError,
)
from poolx.pool.process import Error, WorkerPool
from tests.conftest import wait_until
from tests.engine import helpers
from tests.worker import tasks
from tests.worker.conftest import CONTEXT

ROOT = Path(__file__).resolve().parent.parent
FORK = multiprocessing.get_context("fork")


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``{sample name: {sorted labels: value}}`` of one scrape."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def families(url: str) -> dict[str, tuple[str, frozenset[str]]]:
    """``{family name: (type, label names of its samples)}`` of one scrape."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        labels = {key for sample in family.samples for key in sample.labels} - {"le"}
        found[family.name] = (family.type, frozenset(labels))
    return found


def ok(x):
    return x


def fail(x):
    raise ValueError(x)


# -- poolx.Pool ------------------------------------------------------------------


def test_pool_counts_tasks_by_name_and_outcome():
    """Three tasks, one failing, one timing out: the counters say so."""
    with poolx.Pool(2, context=FORK, metrics_port=0) as pool:
        url = pool.metrics_server.url
        assert url.startswith("http://127.0.0.1:")
        assert pool.apply(ok, (1,)) == 1
        with pytest.raises(ValueError):
            pool.apply(fail, (2,))
        with pytest.raises(TimeLimitExceeded):
            pool.apply(helpers.sleep, (30,), timeout=0.3)
        samples = scrape(url)
        ok_name, fail_name, sleep_name = (tally.task_name(f) for f in (ok, fail, helpers.sleep))
        assert ok_name == "tests.test_metrics.ok"
        for name in (ok_name, fail_name, sleep_name):
            assert value(samples, "poolx_tasks_started_total", task=name) == 1
        assert value(samples, "poolx_tasks_succeeded_total", task=ok_name) == 1
        assert value(samples, "poolx_tasks_succeeded_total", task=fail_name) == 0
        assert value(samples, "poolx_tasks_failed_total", task=fail_name, outcome="error") == 1
        assert value(samples, "poolx_tasks_failed_total", task=sleep_name, outcome="timeout") == 1
        assert value(samples, "poolx_tasks_failed_total", task=sleep_name, outcome="error") == 0
        # Run times of the tasks that returned or raised; the killed one has none.
        assert value(samples, "poolx_task_duration_seconds_count", task=ok_name) == 1
        assert value(samples, "poolx_task_duration_seconds_count", task=sleep_name) == 0
        assert value(samples, "poolx_task_duration_seconds_bucket", task=fail_name, le="+Inf") == 1
        assert 0 < value(samples, "poolx_task_duration_seconds_sum", task=fail_name) < 10
        # A replacement for the killed worker (once its death is seen).
        wait_until(lambda: value(scrape(url), "poolx_workers_started_total") == 3)
        assert value(samples, "poolx_pool_broken") == 0
        # The pool's own stats() is the source: the same numbers.
        stats = pool.stats()["tasks"]
        assert stats[fail_name]["failed"]["error"] == 1 and stats[ok_name]["succeeded"] == 1


def test_pool_outcomes_memory_lost_terminated():
    with poolx.Pool(2, context=FORK, memory_poll_interval=0.02, metrics_port=0) as pool:
        with pytest.raises(MemoryLimitExceeded):
            pool.apply(helpers.allocate_until_stopped, memory_limit="200MB")
        with pytest.raises(WorkerLostError):
            pool.apply(helpers.kill_self)
        running = pool.apply_async(helpers.sleep, (30,))
        wait_until(lambda: running.worker_pids() and any(w["job"] for w in pool.stats()["workers"]))
        pool.terminate_job(running.worker_pids()[0], signal.SIGKILL)
        with pytest.raises(Terminated):
            running.get(10)
        samples = scrape(pool.metrics_server.url)

    def failed(func, outcome):
        return value(samples, "poolx_tasks_failed_total", task=tally.task_name(func), outcome=outcome)

    assert failed(helpers.allocate_until_stopped, "memory") == 1
    assert failed(helpers.kill_self, "lost") == 1
    assert failed(helpers.sleep, "terminated") == 1
    assert value(samples, "poolx_worker_restarts_total") == 1  # the unexpected death only


def test_running_tasks_are_started_and_workers_busy():
    with poolx.Pool(2, context=FORK, metrics_port=0) as pool:
        url = pool.metrics_server.url
        # Workers show as starting until their initializer is done, then idle.
        wait_until(lambda: value(scrape(url), "poolx_workers", state="idle") == 2)
        release = pool.apply_async(helpers.sleep, (30,))
        wait_until(lambda: any(w["job"] for w in pool.stats()["workers"]))
        samples = scrape(url)
        name = tally.task_name(helpers.sleep)
        assert value(samples, "poolx_tasks_started_total", task=name) == 1
        assert value(samples, "poolx_tasks_succeeded_total", task=name) == 0
        assert value(samples, "poolx_workers", state="busy") == 1
        assert value(samples, "poolx_workers", state="idle") == 1
        # A job queued behind busy workers shows in poolx_jobs_queued.
        more = [pool.apply_async(helpers.sleep_ignoring_sigterm, (30,)) for _ in range(4)]
        wait_until(lambda: value(scrape(url), "poolx_jobs_queued") >= 1)
        pool.terminate_job(release.worker_pids()[0], signal.SIGKILL)
        with pytest.raises(Terminated):
            release.get(10)
        # Started once, however often it was seen running: never counted again.
        samples = scrape(url)
        assert value(samples, "poolx_tasks_failed_total", task=name, outcome="terminated") == 1
        assert value(samples, "poolx_tasks_started_total", task=name) == 1
        del more


def test_map_chunks_are_counted_under_the_function():
    with poolx.Pool(2, context=FORK, metrics_port=0) as pool:
        assert pool.map(helpers.square, range(20), chunksize=5) == [i * i for i in range(20)]
        samples = scrape(pool.metrics_server.url)
    name = tally.task_name(helpers.square)
    assert value(samples, "poolx_tasks_succeeded_total", task=name) == 4  # jobs: one per chunk
    assert value(samples, "poolx_task_duration_seconds_count", task=name) == 4


def test_the_executor_counts_calls_by_the_submitted_function():
    """Not under its own run_call (whose outcome the pool cannot see): by
    the function submitted, with the outcome the future got and the run
    times of the calls that returned or raised; a map's chunks under the
    mapped function."""
    with poolx.ProcessPoolExecutor(2, mp_context=FORK) as executor:
        assert executor.submit(ok, 3).result(30) == 3
        with pytest.raises(ValueError):
            executor.submit(fail, 1).result(30)
        with pytest.raises(TimeLimitExceeded):
            executor.schedule(helpers.sleep, (30,), timeout=0.3).result(30)
        assert list(executor.map(helpers.square, range(6), chunksize=2)) == [i * i for i in range(6)]
        running = executor.submit(helpers.sleep, 30)
        wait_until(lambda: executor.stats()["tasks"].get(tally.task_name(helpers.sleep), {})
                   .get("started") == 2)  # seen running: counted before it ends
        assert executor.terminate(running)
        with pytest.raises(Terminated):
            running.result(30)
        tasks = executor.stats()["tasks"]
        with metrics.serve(executor) as server:  # served as a pool's are
            samples = scrape(server.url)
    ok_name, fail_name, sleep_name, square_name = (
        tally.task_name(f) for f in (ok, fail, helpers.sleep, helpers.square))
    assert "run_call" not in " ".join(tasks)
    assert sorted(tasks) == sorted([ok_name, fail_name, sleep_name, square_name])
    counts = {name: (c["started"], c["succeeded"], {k: v for k, v in c["failed"].items() if v})
              for name, c in tasks.items()}
    assert counts == {ok_name: (1, 1, {}), fail_name: (1, 0, {"error": 1}),
                      sleep_name: (2, 0, {"timeout": 1, "terminated": 1}), square_name: (3, 3, {})}
    timed = {name: c["duration"]["count"] for name, c in tasks.items()}
    assert timed == {ok_name: 1, fail_name: 1, sleep_name: 0, square_name: 3}  # not the killed ones
    assert value(samples, "poolx_tasks_succeeded_total", task=square_name) == 3
    assert value(samples, "poolx_task_duration_seconds_count", task=square_name) == 3
    assert value(samples, "poolx_task_duration_seconds_bucket", task=fail_name, le="+Inf") == 1
    assert 0 < value(samples, "poolx_task_duration_seconds_sum", task=ok_name) < 10
    assert value(samples, "poolx_tasks_failed_total", task=sleep_name, outcome="terminated") == 1


def test_the_executor_does_not_count_a_call_that_never_started():
    """Calls terminated or cancelled before they started count nowhere."""
    with poolx.ProcessPoolExecutor(1, mp_context=FORK) as executor:
        blocker = executor.submit(helpers.sleep, 30)
        queued = [executor.submit(ok, i) for i in range(3)]  # behind the blocker
        wait_until(lambda: executor.stats()["tasks"].get(tally.task_name(helpers.sleep), {})
                   .get("started") == 1)
        for future in queued:
            assert executor.terminate(future)
        assert executor.terminate(blocker)
        for future in [blocker, *queued]:
            with pytest.raises(Terminated):
                future.result(30)
        tasks = executor.stats()["tasks"]
    assert tally.task_name(ok) not in tasks
    assert tasks[tally.task_name(helpers.sleep)]["failed"]["terminated"] == 1


def test_the_server_stops_with_the_pool():
    pool = poolx.Pool(1, context=FORK, metrics_port=0)
    url = pool.metrics_server.url
    assert "poolx_workers" in scrape(url)
    pool.close()
    pool.join()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)
    pool = poolx.Pool(1, context=FORK, metrics_port=0)
    url = pool.metrics_server.url
    pool.terminate()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)


def test_serving_does_not_keep_a_forgotten_pool_alive():
    pool = poolx.Pool(1, context=FORK, metrics_port=0)
    url = pool.metrics_server.url
    ref = weakref.ref(pool)
    with pytest.warns(ResourceWarning, match="unclosed running pool"):
        del pool
        gc.collect()
    assert ref() is None
    with pytest.raises(urllib.error.URLError):  # its finalizer stopped the server
        urllib.request.urlopen(url, timeout=5)


def test_a_port_in_use_fails_the_pool_and_leaks_nothing():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            poolx.Pool(1, context=FORK, metrics_port=port)
    # The pool it had started is terminated: its supervisor thread ends.
    wait_until(lambda: not any(t.name == "poolx-supervisor" and t.is_alive()
                               for t in threading.enumerate()))


def test_bad_port_and_bind_are_refused():
    with pytest.raises(ValueError, match="metrics port"):
        poolx.Pool(1, context=FORK, metrics_port=70000)
    with pytest.raises(ValueError, match="bind address"):
        metrics.serve(lambda: {}, bind="")


def test_without_prometheus_client_the_switch_names_the_extra():
    """In a fresh interpreter where prometheus_client cannot be imported."""
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import poolx\n"
        "pool = poolx.Pool(1)\n"  # no switch: works without the extra
        "pool.terminate()\n"
        "try:\n"
        "    poolx.Pool(1, metrics_port=0)\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pip install 'poolx[metrics]'" in done.stdout


def test_a_pool_without_the_switch_imports_no_exporter():
    code = (
        "import sys, poolx\n"
        "pool = poolx.Pool(1); pool.apply(abs, (-1,)); pool.stats(); pool.terminate()\n"
        "print(sorted(m for m in sys.modules if m.startswith(('prometheus_client', 'poolx.metrics'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- WorkerPool --------------------------------------------------------------------


@pytest.fixture
def queue_url():
    url = f"memory://metrics-{os.getpid()}-{id(object())}"
    yield url
    get_broker(url).discard_pending_tasks()


def test_worker_pool_counts_by_task_name(queue_url):
    broker = get_broker(queue_url)
    pool = WorkerPool(broker, tasks.init, workers=2, context=CONTEXT, metrics_port=0)
    assert pool.metrics_server is None
    with pytest.raises(Error, match="not been started"):
        pool.stats()
    queue = poolx.get_queue(queue_url)
    pool.start(timeout=0.2, handle_sigterm=False)
    try:
        url = pool.metrics_server.url
        results = [queue.wt.num("1"), queue.wt.div(1, 0),
                   poolx.Task(queue.wt.sleep, timeout=0.5)(30)]
        for result in results:
            assert result.wait(30)
        samples = scrape(url)
        base = {"queue": broker.name}
        assert value(samples, "poolx_tasks_started_total", task="wt.num", **base) == 1
        assert value(samples, "poolx_tasks_succeeded_total", task="wt.num", **base) == 1
        assert value(samples, "poolx_tasks_failed_total", task="wt.div", outcome="error", **base) == 1
        assert value(samples, "poolx_tasks_failed_total", task="wt.sleep", outcome="timeout",
                     **base) == 1
        assert value(samples, "poolx_task_duration_seconds_count", task="wt.div", **base) == 1
        assert value(samples, "poolx_queue_depth", **base) == 0
        assert value(samples, "poolx_tasks_prefetched", **base) == 0
        # Not the engine's view (every task runs the consumer's run_task).
        assert not any("run_task" in dict(labels).get("task", "")
                       for labels in samples["poolx_tasks_started_total"])
        assert "poolx_redis_reconnects_total" not in samples  # memory:// has no server
        # Queue depth moves: tasks waiting behind two busy workers.
        blockers = [queue.wt.sleep(30) for _ in range(2)]
        waiting = [queue.wt.num(str(i)) for i in range(3)]
        def settled():
            samples = scrape(url)
            return (value(samples, "poolx_workers", state="busy", **base) == 2
                    and value(samples, "poolx_queue_depth", **base)
                    + value(samples, "poolx_tasks_prefetched", **base) == 3)

        wait_until(settled, 30)
        del blockers, waiting
    finally:
        pool.terminate()
    assert pool.metrics_server is None
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)


@pytest.mark.parametrize("kind", ["Pool", "WorkerPool"])
def test_tasks_that_exceeded_their_soft_limit_are_timed(queue_url, kind):
    """A task that did not catch its soft time limit raised in its worker:
    it failed with outcome timeout, and its run time is in the histogram (a
    hard limit's kill is not: see test_pool_counts_tasks_by_name_and_outcome)."""
    if kind == "Pool":
        with poolx.Pool(1, context=FORK, metrics_port=0) as plain:
            with pytest.raises(SoftTimeLimitExceeded):
                plain.apply(helpers.sleep, (30,), soft_timeout=0.3)
            samples = scrape(plain.metrics_server.url)
        check_soft_limit_timed(samples, {"task": tally.task_name(helpers.sleep)})
        return
    pool = WorkerPool(get_broker(queue_url), tasks.init, workers=1, context=CONTEXT, metrics_port=0)
    pool.start(timeout=0.2, handle_sigterm=False)
    try:
        queue = poolx.get_queue(queue_url)
        soft = poolx.Task(queue.wt.sleep, soft_timeout=0.3)(30)
        assert soft.wait(30)
        check_soft_limit_timed(scrape(pool.metrics_server.url), {"queue": pool.broker.name, "task": "wt.sleep"})
    finally:
        pool.terminate()


def check_soft_limit_timed(samples, base: dict[str, str]) -> None:
    assert value(samples, "poolx_tasks_failed_total", outcome="timeout", **base) == 1
    assert value(samples, "poolx_task_duration_seconds_count", **base) == 1
    assert 0.3 <= value(samples, "poolx_task_duration_seconds_sum", **base) < 10
    assert value(samples, "poolx_task_duration_seconds_bucket", le="0.25", **base) == 0
    assert value(samples, "poolx_task_duration_seconds_bucket", le="+Inf", **base) == 1


def test_worker_pool_counts_a_task_started_once_its_worker_runs_it(queue_url):
    """A task sent to a worker that has not started it (the worker is
    stopped here) is prefetched, not running, and not counted as started: a
    pool terminated then would leave it counted as started and never ended."""
    pool = WorkerPool(get_broker(queue_url), tasks.init, workers=1, context=CONTEXT)
    pool.start(timeout=0.2, handle_sigterm=False)
    try:
        [pid] = wait_until(lambda: [w["pid"] for w in pool.stats()["workers"] if w["state"] == "idle"], 30)
        os.kill(pid, signal.SIGSTOP)
        try:
            result = poolx.get_queue(queue_url).wt.num("7")
            stats = wait_until(lambda: (lambda s: s if s["workers"][0]["state"] == "busy" else None)(
                pool.stats()), 30)  # sent to the worker
            assert stats["workers"][0]["job"] is None  # not started
            assert (stats["running"], stats["prefetched"]) == (0, 1)
            assert "wt.num" not in pool.stats()["tasks"]
        finally:
            os.kill(pid, signal.SIGCONT)
        assert result.wait(30) and result.value == 7
        counts = pool.stats()["tasks"]["wt.num"]
        assert (counts["started"], counts["succeeded"]) == (1, 1)
    finally:
        pool.terminate()


def test_worker_pool_port_in_use_fails_its_start(queue_url):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        pool = WorkerPool(get_broker(queue_url), tasks.init, workers=1, context=CONTEXT,
                          metrics_port=taken.getsockname()[1])
        with pytest.raises(OSError):
            pool.start(handle_sigterm=False)
    assert not pool.running and pool.pool is None and pool.metrics_server is None


# -- the exporter -----------------------------------------------------------------


def test_every_metric_is_documented_with_its_type_and_labels():
    """docs/metrics.rst's table lists exactly what is exported."""
    rows = re.findall(r"^   \* - ``(poolx_\w+)``\n     - (\w+)\n     - (.*)$",
                      (ROOT / "docs" / "metrics.rst").read_text(), re.MULTILINE)
    documented = {name: (kind, frozenset(re.findall(r"``(\w+)``", labels)))
                  for name, kind, labels in rows}
    assert documented == {m.name: (m.type, frozenset(m.labels)) for m in metrics.METRICS}


def test_the_metrics_exported_are_the_metrics_listed(queue_url):
    """Names, types and labels of real scrapes of both kinds of source."""
    def expected(worker_pool: bool) -> dict[str, tuple[str, frozenset[str]]]:
        return {m.name.removesuffix("_total"): (m.type, frozenset(m.labels) | (
                {"queue"} if worker_pool else set()))
                for m in metrics.METRICS if worker_pool or not m.worker_pool_only}

    with poolx.Pool(1, context=FORK, metrics_port=0) as pool:
        pool.apply(ok, (1,))
        assert families(pool.metrics_server.url) == expected(False)
    broker = get_broker(queue_url)
    with WorkerPool(broker, tasks.init, workers=1, context=CONTEXT, metrics_port=0) as wp:
        assert poolx.get_queue(queue_url).wt.num("1").wait(30)
        found = families(wp.metrics_server.url)
    want = expected(True)
    del want["poolx_redis_reconnects"]  # memory://: no server, no such sample
    assert {k: v for k, v in found.items() if k != "poolx_redis_reconnects"} == want


def test_a_source_that_cannot_be_read_is_skipped():
    def broken():
        raise RuntimeError("not started")

    with metrics.serve(broken, lambda: {"workers": [], "queued": 2}) as server:
        samples = scrape(server.url)
    assert value(samples, "poolx_jobs_queued", pool="1") == 2
    with pytest.raises(TypeError, match="stats"):
        metrics.serve(42)


def test_several_sources_never_give_the_same_series():
    """Two plain pools, and a plain pool beside a worker pool, in one
    server: a ``pool`` label (the position) tells them apart, and a plain
    pool's ``queue`` label is empty (it failed every scrape before)."""
    plain = {"workers": [], "queued": 1, "tasks": {}}
    worker_pool = {"workers": [], "queued": 3, "tasks": {}, "queue": "jobs", "prefetched": 0}
    with metrics.serve(lambda: plain, lambda: plain, lambda: worker_pool) as server:
        samples = scrape(server.url)
    assert samples["poolx_jobs_queued"] == {
        (("pool", "0"), ("queue", "")): 1, (("pool", "1"), ("queue", "")): 1,
        (("pool", "2"), ("queue", "jobs")): 3}

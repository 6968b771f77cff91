"""The process WorkerPool (the distributed consumer) on Redis: results,
limits, the pool registry and no lease left behind with the pool in this
process; then, as in production and WorQ's own tests, the pool in a process
of its own (a graceful SIGTERM, a killed worker, two pools on one queue)."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request

import pytest

from poolx import Task, TaskFailure, get_queue
from poolx.consumer import STOP_RETRY_TIMEOUT
from poolx.core import batch, get_broker
from poolx.pool.process import run_in_subprocess
from poolx.task import TaskExpired, wait_all
from tests.conftest import wait_until
from tests.redis.pool_process import serve
from tests.taskqueue.conftest import isolated_url
from tests.taskqueue.helpers import WAIT
from tests.worker import tasks
from tests.worker.conftest import start_pool  # noqa: F401 - a fixture


@pytest.fixture
def pool_process(url, tmp_path):
    procs = []

    def start(**kw):
        proc = run_in_subprocess(serve, url, str(tmp_path), **kw)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.terminate()  # graceful: the pool exits once idle
        proc.join(WAIT)
        if proc.is_alive():
            proc.kill()
            proc.join(WAIT)
            log = tmp_path / "log"
            pytest.fail(f"pool process still running:\n{log.read_text() if log.exists() else ''}")


def test_pool_here_consumes_redis_and_leaves_nothing_leased(url, start_pool):  # noqa: F811
    broker = get_broker(url)
    pool = start_pool(broker, tasks.init)
    q = get_queue(url)
    with batch(q):
        squares = [q.wt.num(i) for i in range(200)]
        bad = q.wt.no_such_task()
    total = q.wt.add(squares)  # a Deferred graph across the batch
    limited = Task(q.wt.sleep, timeout=0.2)(30)
    assert wait_all([*squares, bad, total, limited], WAIT)
    assert total.value == sum(range(200))
    assert isinstance(bad._value, TaskFailure) and bad._value.error == "no such task"
    with pytest.raises(TaskFailure, match=r"TimeLimitExceeded: hard time limit \(0.2 s\)"):
        _ = limited.value
    infos = wait_until(lambda: broker.taskqueue.live_pools(), timeout=WAIT)
    assert json.loads(infos[0])["queue"] == "default"
    pool.stop()
    taskqueue = get_broker(url).taskqueue
    assert taskqueue.client.zcard(taskqueue._key + "leases") == 0
    assert len(q) == 0 and broker.taskqueue.live_pools() == []


def test_sigterm_lets_the_running_task_finish(url, pool_process, tmp_path):
    proc = pool_process()
    res = get_queue(url).wt.touch_and_wait(str(tmp_path), "r")
    wait_until((tmp_path / "r.started").exists, WAIT)
    proc.terminate()
    wait_until(lambda: "stopping gracefully" in (tmp_path / "log").read_text(), WAIT)
    (tmp_path / "r.unlock").touch()
    assert res.wait(WAIT) and res.value == "r done"
    proc.join(WAIT)
    assert proc.exitcode == 0 and (tmp_path / "exited").exists()


def test_killed_worker_fails_promptly(url, pool_process):
    pool_process()
    res = Task(get_queue(url).wt.suicide, heartrate=30)()
    assert res.wait(WAIT)  # far sooner than a lease (65 s) would expire
    with pytest.raises(TaskExpired, match="signal 9"):
        _ = res.value


def test_two_pools_share_one_queue(url, pool_process, tmp_path):
    pool_process(workers=1)
    pool_process(workers=1)
    q = get_queue(url)
    # two tasks that each hold a worker until both run: only two pools can do that
    first = q.wt.touch_and_wait(str(tmp_path), "a")
    second = q.wt.touch_and_wait(str(tmp_path), "b")
    wait_until(lambda: (tmp_path / "a.started").exists() and (tmp_path / "b.started").exists(), WAIT)
    (tmp_path / "a.unlock").touch()
    (tmp_path / "b.unlock").touch()
    assert first.wait(WAIT) and second.wait(WAIT)


def test_stop_is_bounded_when_redis_went_away(private_redis, start_pool, tmp_path, caplog):  # noqa: F811
    """Issue 12: stop() used to retry for retry_timeout (30 s) per operation;
    now a few seconds, one line per thing not stored, no traceback."""
    server = private_redis()
    broker = get_broker(server.url)
    pool = start_pool(broker, tasks.init, workers=1)
    q = get_queue(server.url)
    assert q.wt.num(1).wait(WAIT)
    res = q.wt.touch_and_wait(str(tmp_path), "r")
    wait_until((tmp_path / "r.started").exists, WAIT)
    server.kill()
    (tmp_path / "r.unlock").touch()
    started = time.monotonic()
    with caplog.at_level(logging.INFO):
        assert pool.stop()
    elapsed = time.monotonic() - started
    assert elapsed < 3 * STOP_RETRY_TIMEOUT, elapsed
    assert broker.taskqueue.retry_timeout == 30  # restored for whoever uses the broker next
    lost = [r for r in caplog.records if "could not store 1 result" in r.getMessage()]
    assert len(lost) == 1 and "RedisUnavailable" in lost[0].getMessage()
    assert "Traceback" not in caplog.text
    assert res.id  # its result was not stored: the lease rules deliver it again


@pytest.mark.parametrize("scheme", ["memory", "redis"])
def test_broker_close_and_context_manager(scheme, private_redis, tmp_path):
    """Broker.close() releases the backend's connections; the broker is a
    context manager (q.close() would enqueue a task named close)."""
    url = f"memory://close-{tmp_path.name}" if scheme == "memory" else private_redis().url
    with get_broker(url) as broker:
        assert len(broker) == 0
        assert broker.enqueue  # usable inside the block
    broker.close()  # again: nothing happens
    if scheme == "redis":
        import redis

        other = redis.Redis.from_url(url)
        assert len(other.client_list()) == 1  # only this checking client is connected


@pytest.mark.parametrize("heartrate", [0.5])
def test_recovery_after_a_one_second_outage(private_redis, start_pool, tmp_path, heartrate):  # noqa: F811
    """Issue 17: consumers resume within about a second of Redis being back
    (issue 17 saw up to 6.7 s; this scenario measures 0.5 s), and a task running
    through the outage keeps its lease: it is not delivered again."""
    server = private_redis(persistent=True)
    pool = start_pool(get_broker(server.url), tasks.init, workers=2, poll=1.0)
    q = get_queue(server.url, heartrate=heartrate)  # lease: 2 * 0.5 + 5 = 6 s
    assert q.wt.num(1).wait(WAIT)
    running = q.wt.touch_and_wait(str(tmp_path), "r")
    wait_until((tmp_path / "r.started").exists, WAIT)
    server.kill()
    threading.Event().wait(1.0)  # the outage itself, not a synchronisation
    server.start()
    back = time.monotonic()
    res = get_queue(server.url).wt.num(2)  # a fresh producer
    assert res.wait(WAIT) and res.value == 2
    recovery = time.monotonic() - back
    (tmp_path / "r.unlock").touch()
    assert running.wait(WAIT) and running.value == "r done"
    assert pool.consumer.stats["taken"] == 3, pool.consumer.stats  # nothing delivered twice
    assert recovery < 2.5, recovery


def test_redis_reconnects_are_counted_and_exported(private_redis, start_pool):  # noqa: F811
    """A Redis restart under a running worker pool: its metrics say it
    reconnected, and tasks go on."""
    from prometheus_client.parser import text_string_to_metric_families

    server = private_redis(persistent=True)
    url = isolated_url(server.url)
    broker = get_broker(url, retry_timeout=30)
    pool = start_pool(broker, tasks.init, workers=1, metrics_port=0)

    def reconnects() -> float:
        with urllib.request.urlopen(pool.metrics_server.url, timeout=10) as response:
            text = response.read().decode()
        return next(s.value for family in text_string_to_metric_families(text)
                    for s in family.samples if s.name == "poolx_redis_reconnects_total")

    q = get_queue(url)
    assert q.wt.num("1").wait(WAIT)
    assert reconnects() == 0 == broker.taskqueue.reconnects
    server.restart()  # kill -9: the consumer's blocking wait for a task fails mid-call
    assert q.wt.num("2").wait(WAIT)
    wait_until(lambda: reconnects() >= 1, WAIT)
    assert broker.taskqueue.reconnects >= 1


def test_stop_is_bounded_when_redis_went_away_with_a_scheduler(private_redis, start_pool,  # noqa: F811
                                                               caplog):
    """The scheduler's wake-up on stop must not retry for retry_timeout (30 s)
    before the consumer is even asked to stop; its failures are one line each."""
    server = private_redis()
    broker = get_broker(server.url)
    pool = start_pool(broker, tasks.init, workers=1, scheduler=True)
    assert get_queue(server.url).wt.num(1).wait(WAIT)
    wait_until(lambda: pool.scheduler is not None and pool.scheduler.running
               and broker.taskqueue.client.zcard(broker.taskqueue._key + "pwatch"), WAIT)
    server.kill()
    started = time.monotonic()
    with caplog.at_level(logging.INFO):
        assert pool.stop()
    elapsed = time.monotonic() - started
    assert elapsed < 3 * STOP_RETRY_TIMEOUT, elapsed
    assert not pool.scheduler.running
    failed = [r for r in caplog.records if "reading or claiming periodic entries failed"
              in r.getMessage()]
    assert failed and "RedisUnavailable" in failed[0].getMessage()
    assert "Traceback" not in caplog.text

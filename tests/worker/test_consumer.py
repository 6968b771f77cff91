"""BrokerConsumer on a plain poolx.Pool: the parent's exposed callables run in
the workers; outcomes, heartbeats, status, stopping and broken pools."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator

import pytest

import poolx
from poolx import Task, TaskFailure, TaskSpace, get_queue
from poolx.consumer import PREFETCH_MAX, PREFETCH_WINDOW, BrokerConsumer
from poolx.core import get_broker
from tests.conftest import wait_until
from tests.worker import tasks
from tests.worker.conftest import CONTEXT

WAIT = 20


@pytest.fixture
def pool() -> Iterator[poolx.Pool]:
    pool = poolx.Pool(2, context=CONTEXT)
    yield pool
    pool.terminate()


@pytest.fixture
def broker(url):
    broker = get_broker(url)
    broker.expose(tasks.ts)
    return broker


@pytest.fixture
def consume(pool, broker) -> Iterator:
    consumers: list[BrokerConsumer] = []

    def start(**kw) -> BrokerConsumer:
        kw.setdefault("timeout", 0.1)
        consumer = BrokerConsumer(kw.pop("pool", pool), broker, **kw)
        consumer.start()
        consumers.append(consumer)
        return consumer

    yield start
    for consumer in consumers:
        consumer.stop(join=False)
    pool.terminate()
    for consumer in consumers:
        assert consumer.join(WAIT)


def test_parent_callables_run_in_the_pool(url, consume):
    consume()
    q = get_queue(url)
    total = q.wt.add([q.wt.num(i) for i in range(10)])
    assert total.wait(WAIT) and total.value == 45


def test_closures_and_lambdas_are_sent_with_cloudpickle(url, broker, consume):
    offset = 100
    space = TaskSpace("local")
    space.task(lambda x: x + offset, "plus")
    broker.expose(space)
    consume()
    res = get_queue(url).local.plus(1)
    assert res.wait(WAIT) and res.value == 101


def test_failures(url, consume):
    consume()
    q = get_queue(url)
    div, unknown = q.wt.div(1, 0), q.wt.nothing()
    assert div.wait(WAIT) and unknown.wait(WAIT)
    with pytest.raises(TaskFailure, match="ZeroDivisionError: division by zero"):
        _ = div.value
    with pytest.raises(TaskFailure, match="no such task"):
        _ = unknown.value


def test_terminated_job(url, pool, consume, tmp_path):
    consumer = consume()
    res = get_queue(url).wt.touch_and_wait(str(tmp_path), "j")
    started = tmp_path / "j.started"
    wait_until(started.exists, WAIT)
    pool.terminate_job(int(started.read_text()))
    assert res.wait(WAIT)
    with pytest.raises(TaskFailure, match=r"Terminated: the task was terminated \(signal 15\)"):
        _ = res.value
    assert consumer.stats["failed"] == 1


def test_ignore_result_tasks_run(url, consume, tmp_path):
    consume()
    Task(get_queue(url).wt.touch_and_wait, ignore_result=True)(str(tmp_path), "i")
    (tmp_path / "i.unlock").touch()
    wait_until((tmp_path / "i.out").exists, WAIT)


def test_heartbeats_for_running_tasks_only(url, broker, consume, tmp_path):
    beats: list[str] = []
    real = broker.heartbeat

    def heartbeat(task):
        beats.append(task.id)
        real(task)

    broker.heartbeat = heartbeat
    consumer = consume()
    res = Task(get_queue(url).wt.touch_and_wait, heartrate=0.02)(str(tmp_path), "h")
    wait_until(lambda: len(beats) >= 3, WAIT)
    assert set(beats) == {res.id}
    (tmp_path / "h.unlock").touch()
    assert res.wait(WAIT)
    wait_until(lambda: consumer.in_flight == 0, WAIT)
    assert consumer.stats["done"] == 1


def test_a_failing_heartbeat_is_logged_and_harmless(url, broker, consume, tmp_path, caplog):
    def heartbeat(task):
        raise ConnectionError("backend down")

    broker.heartbeat = heartbeat
    consume()
    res = Task(get_queue(url).wt.touch_and_wait, heartrate=0.02)(str(tmp_path), "f")
    wait_until(lambda: "heartbeat failed" in caplog.text, WAIT)
    (tmp_path / "f.unlock").touch()
    assert res.wait(WAIT) and res.value == "f done"
    [record, *_] = [r for r in caplog.records if "heartbeat failed" in r.getMessage()]
    assert record.getMessage().endswith(": ConnectionError: backend down")  # one line, the cause
    assert not record.exc_info  # no traceback above DEBUG


def test_broker_errors_back_off_and_recover(url, broker, consume, caplog):
    real = broker.next_task
    calls = []

    def flaky(timeout=None):
        calls.append(timeout)
        if len(calls) <= 2:
            raise ConnectionError("backend down")
        return real(timeout=timeout)

    broker.next_task = flaky
    broker.next_tasks = None  # use next_task, whatever the broker offers
    consume()
    res = get_queue(url).wt.num(4)
    assert res.wait(WAIT) and res.value == 4
    assert caplog.text.count("cannot take tasks") == 2
    records = [r for r in caplog.records if "cannot take tasks" in r.getMessage()]
    assert all(r.getMessage().endswith("ConnectionError: backend down") for r in records)
    assert "Traceback" not in caplog.text


def test_worker_side_errors_show_tracebacks_at_debug(url, broker, consume, caplog):
    def heartbeat(task):
        raise ConnectionError("backend down")

    broker.heartbeat = heartbeat
    caplog.set_level(logging.DEBUG, logger="poolx.consumer")
    consume()
    res = Task(get_queue(url).wt.sleep, heartrate=0.02)(0.2)
    assert res.wait(WAIT)
    [record, *_] = [r for r in caplog.records if "heartbeat failed" in r.getMessage()]
    assert record.exc_info and record.exc_info[0] is ConnectionError


def test_stop_waits_for_running_tasks(url, consume, tmp_path):
    consumer = consume()
    res = get_queue(url).wt.touch_and_wait(str(tmp_path), "s")
    wait_until((tmp_path / "s.started").exists, WAIT)
    consumer.stop(join=False)
    assert not consumer.join(0.1)
    (tmp_path / "s.unlock").touch()
    assert consumer.join(WAIT)
    assert res.value == "s done"
    assert not consumer.running


def test_a_task_taken_after_stop_goes_back(url, consume):
    consumer = consume(timeout=5)
    wait_until(lambda: consumer.taking, WAIT)
    consumer.stop()  # returns at once although the consumer is still blocked
    res = get_queue(url).wt.num(1)
    wait_until(lambda: consumer.stats["requeued"] == 1, WAIT)
    assert res.status == "enqueued"


def test_closed_pool_breaks_the_consumer(url, pool, consume):
    broken = threading.Event()
    pool.close()
    consumer = consume(on_broken=broken.set)
    res = get_queue(url).wt.num(1)
    assert broken.wait(WAIT)
    assert "not running" in str(consumer.broken)
    assert res.status == "enqueued"


def test_prefetch_follows_each_task_names_run_time(url, consume):
    consumer = consume()
    assert consumer.capacity == 2  # nothing known yet: one task per worker
    q = get_queue(url)
    results = [q.wt.num(i) for i in range(20)]
    assert all(r.wait(WAIT) for r in results)
    assert consumer.estimate("wt.num") < PREFETCH_WINDOW
    assert consumer.depth("wt.num") == PREFETCH_MAX
    assert consumer.capacity == 2 * (1 + PREFETCH_MAX)  # tiny tasks: prefetch
    assert consumer.estimate("wt.sleep") is None
    assert consumer.depth("wt.sleep") == 0  # unknown: never taken ahead
    slow = q.wt.sleep(PREFETCH_WINDOW * 2)
    assert slow.wait(WAIT)
    assert consumer.estimate("wt.sleep") >= PREFETCH_WINDOW * 2
    assert consumer.depth("wt.sleep") == 0  # long: never taken ahead
    assert consumer.depth("wt.num") == PREFETCH_MAX  # one slow name does not change another's
    assert consumer.capacity == 2  # the last task taken was slow


def test_tasks_held_without_a_free_worker_go_back(url, consume, tmp_path):
    """After a tiny task, what is ready is taken as one batch; the slow tasks
    in it that find no free worker within give_back_after return to the
    queue (where another pool could take them) instead of waiting here."""
    q = get_queue(url)
    one = poolx.Pool(1, context=CONTEXT)
    try:
        consumer = consume(pool=one)
        consumer.give_back_after = 0.1
        assert all(r.wait(WAIT) for r in [q.wt.num(i) for i in range(20)])
        blocker = q.wt.touch_and_wait(str(tmp_path), "b")  # unknown name: capacity 1
        assert tasks.wait_for_file(tmp_path / "b.started")
        tiny = q.wt.num(0)
        slow = [q.wt.sleep(0.2) for _ in range(4)]
        (tmp_path / "b.unlock").touch()
        assert blocker.wait(WAIT) and tiny.wait(WAIT)
        assert all(r.wait(WAIT) for r in slow)
    finally:
        one.terminate()
    assert consumer.stats["requeued"] >= 1, consumer.stats
    assert consumer.stats["done"] == 26


def test_fair_sharing_between_pools(url, broker, consume):
    """Two pools of two workers, many tiny tasks, then slow ones: the slow
    ones spread over both pools (issue 12: all ran on one pool before)."""
    q = get_queue(url)
    pools = [poolx.Pool(2, context=CONTEXT) for _ in range(2)]
    try:
        for p in pools:
            assert p.apply_async(os.getpid).get(WAIT)  # workers up before the clock starts
        consumers = [consume(pool=p) for p in pools]
        tiny = [q.wt.num(i) for i in range(200)]
        assert all(r.wait(WAIT) for r in tiny)
        started = time.monotonic()
        slow = [q.wt.sleep(1.0) for _ in range(8)]
        assert all(r.wait(WAIT) for r in slow)
        makespan = time.monotonic() - started
    finally:
        for p in pools:
            p.terminate()
    ideal = 8 * 1.0 / 4
    assert makespan < 1.5 * ideal, (makespan, [c.stats for c in consumers])
    assert all(c.stats["done"] >= 2 for c in consumers)


def test_fixed_prefetch(pool, broker):
    assert BrokerConsumer(pool, broker, prefetch=0).capacity == 2
    assert BrokerConsumer(pool, broker, prefetch=3).capacity == 8


@pytest.mark.parametrize(
    "kw, error",
    [
        ({"timeout": -1}, ValueError),
        ({"timeout": "1"}, TypeError),
        ({"prefetch": -1}, ValueError),
        ({"prefetch": 1.5}, TypeError),
        ({"status_interval": 0}, ValueError),
        ({"status_interval": None}, TypeError),
    ],
)
def test_invalid_arguments(pool, broker, kw, error):
    with pytest.raises(error, match=next(iter(kw))):
        BrokerConsumer(pool, broker, **kw)


def test_start_twice(consume):
    consumer = consume()
    with pytest.raises(RuntimeError):
        consumer.start()


def test_status_is_published_and_withdrawn(url, broker, consume, tmp_path):
    consumer = consume(name="my-pool", status_interval=0.05)
    res = get_queue(url).wt.touch_and_wait(str(tmp_path), "st")
    wait_until((tmp_path / "st.started").exists, WAIT)

    def busy_info():
        for text in broker.taskqueue.live_pools():
            info = json.loads(text)
            if any(w["task"] for w in info["workers"]):
                return info
        return None

    info = wait_until(busy_info, WAIT)
    assert info["name"] == "my-pool" and info["queue"] == "default"
    assert info["state"] == "running" and info["id"] == consumer.pool_id
    assert len(info["workers"]) == 2
    busy = [w for w in info["workers"] if w["task"]]
    assert busy[0]["task"] == f"wt.touch_and_wait [default:{res.id}]"
    assert busy[0]["state"] == "busy"
    assert info["in_flight"] == [busy[0]["task"]]
    (tmp_path / "st.unlock").touch()
    assert res.wait(WAIT)
    consumer.stop()
    assert broker.taskqueue.live_pools() == []


def test_register_false(broker, consume):
    checks = []
    consumer = consume(register=False, status_interval=0.01)
    real = consumer.check_pool
    consumer.check_pool = lambda: (checks.append(1), real())
    wait_until(lambda: len(checks) >= 3, WAIT)
    assert broker.taskqueue.live_pools() == []


def test_a_queue_per_pool_routes_tasks(url, pool):
    """docs/workers.rst, routing: a task runs only on a pool consuming its queue."""
    routed = get_broker(url, "gpu-1")
    routed.expose(tasks.ts)
    consumer = BrokerConsumer(pool, routed, timeout=0.1)
    consumer.start()
    try:
        here = get_queue(url, "gpu-1").wt.getpid()
        elsewhere = get_queue(url).wt.getpid()  # 'default': no pool consumes it
        assert here.wait(WAIT) and here.value in [w["pid"] for w in pool.stats()["workers"]]
        assert not elsewhere.wait(0.3) and elsewhere.status == "enqueued"
    finally:
        consumer.stop()

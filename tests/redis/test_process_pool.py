"""The process WorkerPool (the distributed consumer) on Redis: results,
the pool registry, and a graceful stop that leaves no lease behind."""

from __future__ import annotations

import json
import multiprocessing

from poolx import get_queue
from poolx.core import batch, get_broker
from poolx.pool.process import WorkerPool
from poolx.task import TaskFailure, wait_all
from tests.conftest import wait_until
from tests.redis import tasks
from tests.taskqueue.helpers import WAIT


def test_process_pool_consumes_redis_and_leaves_nothing_leased(url):
    broker = tasks.init(url)
    pool = WorkerPool(broker, tasks.init, workers=2, context=multiprocessing.get_context("fork"))
    pool.start(timeout=0.2, handle_sigterm=False)
    try:
        q = get_queue(url)
        with batch(q):
            results = [q.rt.square(i) for i in range(200)]
            bad = q.rt.no_such_task()
        total = q.rt.total(results)
        assert wait_all([*results, bad, total], WAIT)
        assert total.value == sum(i * i for i in range(200))
        assert isinstance(bad._value, TaskFailure) and bad._value.error == "no such task"
        pools = wait_until(lambda: broker.taskqueue.live_pools(), timeout=WAIT)
        assert any(json.loads(info) for info in pools)
    finally:
        pool.stop()
    queue = get_broker(url).taskqueue
    assert queue.client.zcard(queue._key + "leases") == 0
    assert len(q) == 0

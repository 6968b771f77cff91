"""The process WorkerPool on Redis: the producer here, the pool in another
process, as WorQ's own tests run it."""

from __future__ import annotations

import os
import signal

import pytest

from poolx import Task, TaskFailure, get_queue
from poolx.core import get_broker
from poolx.pool.process import run_in_subprocess
from poolx.task import TaskExpired
from tests.conftest import wait_until
from tests.taskqueue.conftest import delete_prefix, isolated_url
from tests.worker import tasks
from tests.worker.redis_pool import serve

pytestmark = pytest.mark.redis
WAIT = 30


@pytest.fixture
def url(redis_server):
    url = isolated_url(redis_server.url)
    yield url
    get_broker(url).discard_pending_tasks()
    delete_prefix(url)


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


def test_in_process_pool_on_redis(url, start_pool):
    start_pool(get_broker(url), tasks.init)
    q = get_queue(url)
    total = q.wt.add([q.wt.num(i) for i in range(20)])
    assert total.wait(WAIT) and total.value == 190
    limited = Task(q.wt.sleep, timeout=0.2)(30)
    assert limited.wait(WAIT)
    with pytest.raises(TaskFailure, match="TimeLimitExceeded"):
        _ = limited.value


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


def test_workers_exit_when_the_pool_process_is_killed(url, pool_process, tmp_path):
    proc = pool_process()
    res = get_queue(url).wt.getpid()
    assert res.wait(WAIT)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(WAIT)

    def gone():
        try:
            os.kill(res.value, 0)
        except ProcessLookupError:
            return True
        import psutil

        return psutil.Process(res.value).status() == psutil.STATUS_ZOMBIE

    wait_until(gone, 10)


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

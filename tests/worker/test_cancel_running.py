"""Cancelling a task that a process WorkerPool runs (``memory://``; Redis in
``tests/redis/test_cancel_redis.py``): its worker is killed, the task fails
as cancelled at once, and the pool goes on."""

from __future__ import annotations

import psutil
import pytest

from poolx import Task, get_broker, get_queue
from poolx.task import CANCELLED_ERROR, Retry, TaskCancelled
from tests.conftest import wait_until
from tests.worker import tasks

WAIT = 20


def cancelled(result) -> TaskCancelled:
    """The TaskCancelled ``result`` resolved to."""
    assert result.wait(WAIT)
    with pytest.raises(TaskCancelled) as info:
        _ = result.value
    assert (info.value.task_id, info.value.error) == (result.id, CANCELLED_ERROR)
    return info.value


def started_pid(tmp_path, name: str) -> int:
    assert tasks.wait_for_file(tmp_path / f"{name}.started", WAIT)
    return int((tmp_path / f"{name}.started").read_text())


def test_a_running_task_is_killed_and_fails_as_cancelled(url, start_pool, tmp_path):
    """One worker: the next task runs only once the cancelled one's worker
    was killed and replaced (the cancelled one would wait 60 s)."""
    start_pool(get_broker(url), tasks.init, workers=1)
    q = get_queue(url)
    res = q.wt.touch_and_wait(str(tmp_path), "a", 60)
    pid = started_pid(tmp_path, "a")
    assert res.cancel() is True
    cancelled(res)
    wait_until(lambda: not psutil.pid_exists(pid), WAIT)
    after = q.wt.getpid()
    assert after.wait(WAIT) and after.value != pid
    (tmp_path / "a.unlock").write_text("")
    assert not (tmp_path / "a.out").exists()
    cancelled(res)
    assert res.cancel() is False


def test_a_cancelled_retrying_task_runs_no_further_attempt(url, start_pool, tmp_path):
    start_pool(get_broker(url), tasks.init, workers=1)
    q = get_queue(url)
    res = Task(q.wt.touch_and_wait, retry=Retry(max=3, delay=0.01))(str(tmp_path), "r", 60)
    pid = started_pid(tmp_path, "r")
    assert res.cancel() is True
    wait_until(lambda: not psutil.pid_exists(pid), WAIT)
    after = q.wt.getpid()
    assert after.wait(WAIT)
    assert res.status == "failed"
    cancelled(res)
    (tmp_path / "r.started").unlink()
    marker = q.wt.getpid()  # a retry would have been due long before this ran
    assert marker.wait(WAIT)
    assert not (tmp_path / "r.started").exists()

"""Retries through a process WorkerPool: errors raised in worker processes
are retried by type, time limits only with ``on_timeout=True``."""

from __future__ import annotations

import os

import pytest

from poolx import Task, TaskFailure, get_broker, get_queue
from poolx.task import Retry
from tests.worker import tasks

WAIT = 20


def test_an_error_in_a_worker_process_is_retried(url, start_pool, tmp_path):
    start_pool(get_broker(url), tasks.init, workers=1)
    res = Task(get_queue(url).wt.fail_times, retry=Retry(max=3, delay=0.05))(str(tmp_path), 2)
    assert res.wait(WAIT)
    assert res.value == 3
    assert sorted(os.listdir(tmp_path)) == ["1", "2", "3"]


def test_a_pool_on_a_named_queue_retries_too(url, start_pool, tmp_path):
    """The usual WorQ set-up: the pool consumes queue "jobs", its init_func
    returns a broker of the default name; the failure the worker sent back,
    renamed to the pool's queue, kept its retry mark (it lost it, and the
    task failed after one attempt)."""
    start_pool(get_broker(url, "jobs"), tasks.init, workers=1)
    queue = get_queue(url, name="jobs")
    res = Task(queue.wt.fail_times, retry=Retry(max=3, delay=0.05))(str(tmp_path), 2)
    assert res.wait(WAIT)
    assert res.value == 3
    assert sorted(os.listdir(tmp_path)) == ["1", "2", "3"]


def test_a_result_that_cannot_be_sent_back_is_not_retried(url, start_pool, tmp_path):
    """The task ran to its end: running it again would repeat its side
    effects (it ran three times under Retry(max=2))."""
    start_pool(get_broker(url), tasks.init, workers=1)
    res = Task(get_queue(url).wt.count_then_unpicklable, retry=Retry(max=2, delay=0.05))(str(tmp_path))
    assert res.wait(WAIT)
    with pytest.raises(TaskFailure, match=r"\(1 attempt\)$"):
        _ = res.value
    assert os.listdir(tmp_path) == ["1"]


def test_a_hard_time_limit_is_not_retried_by_default(url, start_pool):
    start_pool(get_broker(url), tasks.init, workers=1)
    res = Task(get_queue(url).wt.sleep, timeout=0.3, retry=Retry(max=2, delay=0.05))(30)
    assert res.wait(WAIT)
    with pytest.raises(TaskFailure, match=r"TimeLimitExceeded: .* \(1 attempt\)$") as info:
        _ = res.value
    assert info.value.attempts == 1


def test_on_timeout_retries_a_task_that_hit_its_time_limit(url, start_pool):
    start_pool(get_broker(url), tasks.init, workers=1)
    retry = Retry(max=1, delay=0.05, on_timeout=True)
    res = Task(get_queue(url).wt.sleep, timeout=0.3, retry=retry)(30)
    assert res.wait(WAIT)
    with pytest.raises(TaskFailure, match=r"TimeLimitExceeded: .* \(2 attempts\)$") as info:
        _ = res.value
    assert info.value.attempts == 2


def test_a_lost_worker_is_not_retried_by_default(url, start_pool):
    start_pool(get_broker(url), tasks.init, workers=1)
    res = Task(get_queue(url).wt.suicide, retry=Retry(max=2, delay=0.05))()
    assert res.wait(WAIT)
    with pytest.raises(TaskFailure, match=r"\(1 attempt\)$"):
        _ = res.value


def test_a_soft_time_limit_is_not_retried_by_default(url, start_pool):
    start_pool(get_broker(url), tasks.init, workers=1)
    res = Task(get_queue(url).wt.sleep, soft_timeout=0.2, retry=Retry(max=2, delay=0.05))(30)
    assert res.wait(WAIT)
    with pytest.raises(TaskFailure, match=r"SoftTimeLimitExceeded: .* \(1 attempt\)$"):
        _ = res.value


@pytest.mark.parametrize("on_timeout, attempts", [(False, "1 attempt"), (True, "2 attempts")])
def test_a_memory_limit_is_retried_only_with_on_timeout(url, start_pool, on_timeout, attempts):
    start_pool(get_broker(url), tasks.init, workers=1, memory_poll_interval=0.02)
    retry = Retry(max=1, delay=0.05, on_timeout=on_timeout)
    res = Task(get_queue(url).wt.hog, memory_limit="60MB", retry=retry)(200, 5)
    assert res.wait(WAIT)
    with pytest.raises(TaskFailure, match=rf"MemoryLimitExceeded: .* \({attempts}\)$"):
        _ = res.value

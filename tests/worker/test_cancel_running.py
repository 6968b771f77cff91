"""Cancelling a task that a process WorkerPool runs (``memory://``; Redis in
``tests/redis/test_cancel_redis.py``): its worker is killed, the task fails
as cancelled at once, and the pool goes on."""

from __future__ import annotations

import signal
import threading

import psutil
import pytest

import poolx
from poolx import Task, get_broker, get_queue
from poolx.consumer import BrokerConsumer
from poolx.task import CANCELLED_ERROR, Retry, TaskCancelled
from tests.conftest import wait_until
from tests.worker import tasks
from tests.worker.conftest import CONTEXT

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



def test_a_cancelled_job_that_waits_in_the_pool_is_killed_when_it_starts(url, tmp_path):
    """The consumer handed the task to the pool, whose one worker is busy
    with a job of its own: cancelled then, it cannot be killed yet (the
    engine kills running jobs only); it is killed once it starts, although
    it is the consumer's only task (it would wait 60 s)."""
    broker = get_broker(url)
    broker.expose(tasks.ts)
    pool = poolx.Pool(1, context=CONTEXT)
    consumer = BrokerConsumer(pool, broker, timeout=0.1)
    try:
        blocker = pool.apply_async(tasks.touch_and_wait, (str(tmp_path), "blocker", 60))
        started_pid(tmp_path, "blocker")
        consumer.start()
        res = get_queue(url).wt.touch_and_wait(str(tmp_path), "queued", 60)
        wait_until(lambda: consumer.in_flight == 1 and consumer.held == 0, WAIT)
        assert res.cancel() is True
        cancelled(res)
        (tmp_path / "blocker.unlock").write_text("")
        assert blocker.get(WAIT) == "blocker done"
        wait_until(lambda: consumer.in_flight == 0, WAIT)  # its job was answered: killed
        started = tmp_path / "queued.started"  # (it may be killed before it wrote this)
        if started.exists():
            pid = int(started.read_text())
            wait_until(lambda: not psutil.pid_exists(pid), WAIT)
        assert not (tmp_path / "queued.out").exists()
    finally:
        consumer.stop(join=False)
        pool.terminate()
        assert consumer.join(WAIT)


def test_an_idle_consumer_does_not_watch_the_backend(url, tmp_path, monkeypatch):
    """With nothing in flight the watcher waits in its own process: no
    cancelled_tasks call at all, however short its backend waits are."""
    monkeypatch.setattr("poolx.consumer.cancels.WATCH_TIMEOUT", 0.01)
    broker = get_broker(url)
    broker.expose(tasks.ts)
    calls: list[float] = []
    real = broker.cancelled_tasks

    def counted(task_ids, timeout):
        calls.append(timeout)
        return real(task_ids, timeout)

    broker.cancelled_tasks = counted
    pool = poolx.Pool(1, context=CONTEXT)
    consumer = BrokerConsumer(pool, broker, timeout=0.1)
    try:
        consumer.start()
        res = get_queue(url).wt.sleep(0.3)
        assert res.wait(WAIT)
        wait_until(lambda: consumer.in_flight == 0, WAIT)
        assert calls  # it watched while the task ran
        before = len(calls)
        assert not threading.Event().wait(0.5)  # idle for 50 of its backend waits
        assert len(calls) - before <= 1  # at most the look that ended with the task
    finally:
        consumer.stop(join=False)
        pool.terminate()
        assert consumer.join(WAIT)


class _StubPool:
    """One worker (pid 1) that never finishes anything: records the jobs it
    was given (``(task id, seq)``) and the signals sent to each."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, int]] = []
        self.signals: dict[int, list[int | None]] = {}

    def stats(self) -> dict:
        return {"processes": 1, "workers": []}

    def submit_jobs(self, calls) -> list[int]:
        seqs = []
        for sink, _, args, *_limits in calls:
            seq = len(self.submitted) + 1
            self.submitted.append((args[0].id, seq))
            self.signals[seq] = []
            sink.job_sent(1)
            seqs.append(seq)
        return seqs

    def terminate_job(self, pid, sig=None, seq=None) -> None:
        assert pid == 1
        self.signals[seq].append(sig)


def test_the_consumer_drops_a_held_task_and_kills_a_running_one(url):
    """stop_cancelled, as the watcher calls it: a task held ahead (no
    worker free) is never handed to the pool; the one in the pool is
    killed with SIGKILL (a worker of ``poolx worker`` ignores SIGTERM)."""
    broker = get_broker(url)
    q = get_queue(url)
    first, second = q.wt.sleep(60), q.wt.sleep(60)
    pool = _StubPool()
    consumer = BrokerConsumer(pool, broker, register=False)
    for _ in range(2):
        consumer.track(broker.next_task(timeout=0), func=tasks.sleep)
    assert [task_id for task_id, _ in pool.submitted] == [first.id]
    assert (consumer.in_flight, consumer.held) == (2, 1)
    assert second.cancel() is True
    consumer.stop_cancelled(second.id)
    assert (consumer.in_flight, consumer.held) == (1, 0)
    assert first.cancel() is True
    consumer.stop_cancelled(first.id)
    [(_, seq)] = pool.submitted
    assert pool.signals[seq] == [signal.SIGKILL]
    assert consumer.killing()  # until the pool answers
    consumer.kill_pending()
    assert pool.signals[seq] == [signal.SIGKILL, signal.SIGKILL]
    cancelled(first)
    cancelled(second)

"""poolx.pool.thread.WorkerPool: stopping, heartbeats, replacing dead threads."""

from __future__ import annotations

import threading
import time

import pytest

from poolx import Task, get_broker, get_queue
from poolx.pool.thread import WorkerPool
from tests.conftest import wait_until

from .helpers import WAIT, thread_worker


def test_stop_with_sentinel_wakes_idle_threads_promptly(url):
    broker = get_broker(url)
    pool = WorkerPool(broker, workers=3)
    pool.start(timeout=60)  # without the sentinel, stop would take a minute
    began = time.monotonic()
    pool.stop(use_sentinel=True)
    assert time.monotonic() - began < WAIT / 2
    assert pool.threads == []


def test_stop_without_join_then_join(url):
    broker = get_broker(url)
    pool = WorkerPool(broker, workers=2)
    pool.start(timeout=0.05)
    threads = list(pool.threads)
    pool.stop(join=False)
    pool.join()
    assert not any(thread.is_alive() for thread in threads)


def test_start_twice_is_an_error_and_restart_works(url):
    def func():
        return "ran"

    broker = get_broker(url)
    broker.expose(func)
    pool = WorkerPool(broker)
    pool.start()
    with pytest.raises(RuntimeError, match="already running"):
        pool.start()
    pool.stop(use_sentinel=True)
    with pool:  # restart, as a context manager
        res = get_queue(url).func()
        assert res.wait(WAIT) and res.value == "ran"
    with pytest.raises(ValueError, match="workers"):
        WorkerPool(broker, workers=0)


def test_threads_come_from_thread_factory(url):
    made = []

    def factory(target, args):
        thread = threading.Thread(target=target, args=args)
        made.append(thread)
        return thread

    pool = WorkerPool(get_broker(url), workers=2, thread_factory=factory)
    pool.start(timeout=0.05)
    pool.stop()
    assert len(made) == 3  # two workers and the heartbeat thread


def test_next_task_is_looked_up_on_the_broker_at_call_time(url):
    def func(x):
        return x

    broker = get_broker(url)
    broker.expose(func)
    calls = []
    with thread_worker(broker, timeout=0.05):
        real = broker.next_task

        def spy(timeout=None):
            calls.append(timeout)
            return real(timeout)

        broker.next_task = spy  # wrapped while the pool runs
        res = get_queue(url).func(1)
        assert res.wait(WAIT) and res.value == 1
        # A thread already inside the real next_task may have taken the task;
        # its next call goes through the spy.
        wait_until(lambda: calls, timeout=WAIT)
    assert calls and all(timeout == 0.05 for timeout in calls)


def test_dead_thread_is_replaced(url):
    def die():
        raise SystemExit("worker thread dies")

    def ident():
        return threading.get_ident()

    broker = get_broker(url)
    broker.expose(die)
    broker.expose(ident)
    with thread_worker(broker, workers=1) as pool:
        [first] = [thread.ident for thread in pool.threads]
        q = get_queue(url)
        dead = q.die()
        assert dead.wait(WAIT)
        assert dead.status == "failed"
        res = q.ident()  # only a replacement thread can run this
        assert res.wait(WAIT), repr(res)
        assert res.value != first


def test_broker_errors_kill_and_replace_threads_with_backoff(url):
    broker = get_broker(url)
    real = broker.next_task
    failures = iter([RuntimeError("backend down")] * 3)

    def flaky(timeout=None):
        error = next(failures, None)
        if error is not None:
            raise error
        return real(timeout)

    def ident():
        return threading.get_ident()

    broker.expose(ident)
    broker.next_task = flaky
    with thread_worker(broker, workers=1) as pool:
        [first] = [thread.ident for thread in pool.threads]
        res = get_queue(url).ident()
        assert res.wait(WAIT), repr(res)
        assert res.value != first
    assert next(failures, None) is None  # every injected error was hit


def test_heartbeats_are_sent_while_a_task_runs(url):
    beats = []
    enough = threading.Event()

    def func():
        assert enough.wait(WAIT), "no heartbeats"
        return len(beats)

    broker = get_broker(url)
    broker.expose(func)
    real = broker.heartbeat

    def heartbeat(task):
        beats.append(task.id)
        real(task)
        if len(beats) >= 3:
            enough.set()

    broker.heartbeat = heartbeat
    with thread_worker(broker):
        res = Task(get_queue(url).func, heartrate=0.01)()
        assert res.wait(WAIT), repr(res)
        assert res.value >= 3
        assert set(beats) == {res.id}

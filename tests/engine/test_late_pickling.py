"""Late pickling (issue 18): a call submitted while many pickled arguments
wait to be sent is pickled later, by the pool's pickler thread — never by the
supervisor thread, which owns all pool state and must never run user code
that may be slow or block: timeouts, dead workers and results go on while an
argument's ``__reduce__`` takes its time."""

from __future__ import annotations

import multiprocessing
import os
import threading

import psutil
import pytest

import poolx
from poolx.engine import supervisor
from poolx.exceptions import PoolTerminated, RestartFreqExceeded, TimeLimitExceeded, WorkerLostError
from tests.conftest import wait_until
from tests.engine import helpers


class WaitsToPickle:
    """Pickles (as ``value``) once ``release`` is set; ``started`` tells
    that its pickling began."""

    def __init__(self, release: threading.Event, value: object = b"late") -> None:
        self.release = release
        self.value = value
        self.started = threading.Event()

    def __reduce__(self):
        self.started.set()
        self.release.wait()
        return type(self.value), (self.value,)


class PicklesUnderLock:
    """Takes ``lock`` to pickle (as ``b"locked"``): an object shared with the
    thread that submits it, which may hold the lock meanwhile."""

    def __init__(self, lock) -> None:
        self.lock = lock

    def __reduce__(self):
        with self.lock:
            return bytes, (b"locked",)


def test_a_slow_pickle_does_not_delay_timeouts_nor_the_death_of_workers(fork_ctx, monkeypatch):
    monkeypatch.setattr(supervisor, "EAGER_BYTES", 0)  # every call is pickled late
    release = threading.Event()
    slow = WaitsToPickle(release)
    pids: list[int] = []
    with poolx.Pool(3, context=fork_ctx) as pool:
        try:
            timed = pool.apply_async(helpers.sleep, (60,), timeout=1.0)
            doomed = pool.apply_async(helpers.sleep, (60,), accept_callback=lambda pid, _: pids.append(pid))
            wait_until(timeout=30, predicate=lambda: pids)
            late = pool.apply_async(len, (slow,))  # a worker is idle: it is due now
            assert slow.started.wait(30)
            os.kill(pids[0], 9)
            # Both are noticed while the argument is still being pickled.
            with pytest.raises(TimeLimitExceeded):
                timed.get(10)
            with pytest.raises(WorkerLostError):
                doomed.get(10)
            assert not late.ready()
        finally:
            release.set()
        assert late.get(30) == 4
        assert pool.apply(helpers.square, (3,)) == 9


def test_an_argument_pickled_under_a_lock_its_caller_holds_stalls_only_its_job(fork_ctx, monkeypatch):
    """The caller holds an RLock that the argument's pickling takes, and
    waits for a result: the pickle waits for the caller, the pool does not."""
    monkeypatch.setattr(supervisor, "EAGER_BYTES", 0)
    lock = threading.RLock()
    with poolx.Pool(2, context=fork_ctx) as pool:
        with lock:
            before = pool.apply_async(helpers.sleep, (0.2,))
            stuck = pool.apply_async(len, (PicklesUnderLock(lock),))
            assert before.get(10) == 0.2  # its result is read meanwhile
            with pytest.raises(multiprocessing.TimeoutError):
                stuck.get(0.2)
            assert pool.stats()["completed"] == 1  # the supervisor answers
        assert stuck.get(30) == 6  # the caller let go: the pickle goes on
        assert pool.apply(helpers.square, (4,)) == 16


def test_terminate_returns_while_the_pickler_is_stuck(fork_ctx, monkeypatch):
    """A pickle that never ends does not keep terminate() from killing the
    workers and failing every job not done (the stuck pickler thread stays
    blocked until the pickle returns; then it exits)."""
    monkeypatch.setattr(supervisor, "EAGER_BYTES", 0)
    release = threading.Event()
    never = WaitsToPickle(release)
    pool = poolx.Pool(2, context=fork_ctx)
    try:
        pids = [worker["pid"] for worker in pool.stats()["workers"]]
        running = pool.apply_async(helpers.sleep, (60,))
        stuck = pool.apply_async(len, (never,))  # a worker is idle: it is due now
        assert never.started.wait(30)
        behind = pool.apply_async(helpers.square, (5,))  # waits behind it (submission order)
        pool.terminate()
        for result in (running, stuck, behind):
            with pytest.raises(PoolTerminated):
                result.get(10)
        assert pool.join(10)
        assert not any(psutil.pid_exists(pid) for pid in pids)
        pickler = pool._supervisor.late._thread
        assert pickler is not None and pickler.is_alive()
    finally:
        release.set()
        pool.terminate()
    pickler.join(30)
    assert not pickler.is_alive()


def test_jobs_behind_a_late_pickle_are_sent_after_it(fork_ctx, monkeypatch, tmp_path):
    """Dispatch stays in submission order: calls pickled early (a map's
    chunks) wait for an earlier call whose arguments are being pickled."""
    monkeypatch.setattr(supervisor, "EAGER_BYTES", 0)
    log = str(tmp_path / "log")
    release = threading.Event()
    slow = WaitsToPickle(release, 9)
    with poolx.Pool(1, context=fork_ctx) as pool:
        try:
            first = pool.apply_async(helpers.logged_job, (log, 0))
            late = pool.apply_async(helpers.logged_job, (log, slow))
            assert slow.started.wait(30)
            chunks = pool.starmap_async(helpers.logged_job, [(log, i) for i in (1, 2)], chunksize=1)
            assert first.get(30) is not None
            assert not chunks.ready()
            assert pool.stats()["queued"] == 3  # the late call and the two chunks behind it
        finally:
            release.set()
        late.get(30)
        chunks.get(30)
    assert list(helpers.logged_runs(log)) == [0, 9, 1, 2]


def test_a_pool_that_breaks_fails_a_call_whose_pickle_waits(fork_ctx, monkeypatch):
    monkeypatch.setattr(supervisor, "EAGER_BYTES", 0)
    release = threading.Event()
    slow = WaitsToPickle(release)
    with poolx.Pool(1, context=fork_ctx, initializer=helpers.failing_initializer,
                    max_restarts=2, max_restart_freq=60) as pool:
        try:
            stuck = pool.apply_async(len, (slow,))
            assert slow.started.wait(30)
            with pytest.raises(RestartFreqExceeded):
                stuck.get(30)
        finally:
            release.set()


def test_close_and_join_wait_for_the_calls_pickled_late(fork_ctx, monkeypatch):
    monkeypatch.setattr(supervisor, "EAGER_BYTES", 0)
    pool = poolx.Pool(2, context=fork_ctx)
    results = [pool.apply_async(helpers.square, (i,)) for i in range(50)]
    pool.close()
    assert pool.join(30)
    assert [r.get(0) for r in results] == [i * i for i in range(50)]


def test_the_pickler_keeps_only_its_window_of_pickles_ahead_of_the_workers(fork_ctx, monkeypatch, tmp_path):
    """Late calls are pickled shortly before they are sent, not all at once:
    with a window of 0, one pickle waits while the worker is busy."""
    monkeypatch.setattr(supervisor, "EAGER_BYTES", 0)
    gate = str(tmp_path / "gate")
    arg = b"a" * 10_000
    with poolx.Pool(1, context=fork_ctx, shm_threshold=None) as pool:
        first = pool.apply_async(helpers.gated_len, (gate, b"x"))
        results = [pool.apply_async(helpers.gated_len, (gate, arg)) for _ in range(50)]
        late = pool._supervisor.late
        wait_until(timeout=30, predicate=lambda: late.wants_room and pool.stats()["queued"] == 50)
        assert 10_000 <= pool._supervisor.call(lambda sup: sup.waiting_bytes) < 11_000
        with open(gate, "w"):
            pass
        assert first.get(60) == 1 and [r.get(60) for r in results] == [10_000] * 50
        assert pool._supervisor.call(lambda sup: sup.waiting_bytes) == 0

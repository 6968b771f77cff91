"""grow / shrink / restart / terminate_job, lifecycle callbacks, restart limits, stats."""

from __future__ import annotations

import signal
import threading

import pytest

import poolx
from poolx.exceptions import RestartFreqExceeded, Terminated
from tests.conftest import wait_until
from tests.engine import helpers


def _pids(pool):
    return {w["pid"] for w in pool.stats()["workers"] if w["state"] != "retiring"}


def test_grow_and_shrink(fork_ctx):
    with poolx.Pool(1, context=fork_ctx) as pool:
        pool.grow(2)
        wait_until(lambda: len(_pids(pool)) == 3)
        busy = pool.apply_async(helpers.sleep, (0.5,))
        wait_until(lambda: busy.worker_pids())
        pool.shrink(2)
        assert busy.get(10) == 0.5  # shrinking never kills a running job
        wait_until(lambda: len(pool.stats()["workers"]) == 1)
        with pytest.raises(ValueError, match="cannot shrink the pool by 2: it has 1 processes"):
            pool.shrink(2)
        with pytest.raises(ValueError, match="n must be at least 0"):
            pool.grow(-1)
        assert pool.apply(helpers.square, (3,)) == 9


def test_shrink_takes_idle_workers_first(fork_ctx):
    with poolx.Pool(2, context=fork_ctx) as pool:
        busy = pool.apply_async(helpers.sleep, (0.5,))
        wait_until(lambda: busy.worker_pids())
        busy_pid = busy.worker_pids()[0]
        pool.shrink(1)
        wait_until(lambda: len(pool.stats()["workers"]) == 1)
        assert _pids(pool) == {busy_pid}
        assert busy.get(10) == 0.5


def test_restart_replaces_every_worker_after_running_jobs(fork_ctx):
    with poolx.Pool(2, context=fork_ctx) as pool:
        old = _pids(pool)
        running = [pool.apply_async(helpers.sleep, (0.3,)) for _ in range(2)]
        queued = [pool.apply_async(helpers.getpid) for _ in range(6)]
        wait_until(lambda: all(r.worker_pids() for r in running))
        pool.restart()
        assert [r.get(10) for r in running] == [0.3, 0.3]
        after = [pool.apply(helpers.getpid) for _ in range(4)]
        assert not old & set(after)
        # queued jobs ran, and none of them after the call on an old worker
        assert not old & {r.get(10) for r in queued}


def test_terminate_job(fork_ctx):
    with poolx.Pool(2, context=fork_ctx) as pool:
        result = pool.apply_async(helpers.sleep, (30,))
        wait_until(lambda: result.worker_pids() and any(
            w["job"] for w in pool.stats()["workers"]))
        pool.terminate_job(result.worker_pids()[0], signal.SIGKILL)
        with pytest.raises(Terminated) as info:
            result.get(10)
        assert info.value.args == (signal.SIGKILL,)
        idle_pid = pool.apply(helpers.getpid)
        pool.terminate_job(idle_pid)  # not running a job: nothing happens
        assert pool.apply(helpers.square, (5,)) == 25
        assert pool.stats()["restarts"] == 0


def test_lifecycle_callbacks_once_per_worker(fork_ctx):
    lock = threading.Lock()
    up, down, exits = [], [], []

    def on_up(proc):
        with lock:
            up.append(proc.pid)

    def on_down(proc):
        with lock:
            down.append(proc.pid)

    def on_exit(pid, code):
        with lock:
            exits.append((pid, code))

    pool = poolx.Pool(2, maxtasksperchild=2, context=fork_ctx, on_process_up=on_up,
                      on_process_down=on_down, on_process_exit=on_exit)
    pool.map(helpers.square, range(8), chunksize=1)
    victim = pool.apply_async(helpers.kill_self)
    with pytest.raises(poolx.WorkerLostError):
        victim.get(10)
    pool.close()
    pool.join()
    assert sorted(up) == sorted(set(up)) and len(up) >= 5
    assert sorted(down) == sorted(up)
    assert sorted(pid for pid, _ in exits) == sorted(up)
    codes = dict(exits)
    assert codes[victim.worker_pids()[0]] == -signal.SIGKILL
    assert sum(1 for code in codes.values() if code == 0) == len(up) - 1


def test_max_restarts_breaks_the_pool_instead_of_respawning_forever(fork_ctx):
    pool = poolx.Pool(1, max_restarts=2, max_restart_freq=60, context=fork_ctx)
    try:
        for _ in range(3):
            with pytest.raises(poolx.WorkerLostError):
                pool.apply(helpers.exit_now, (1,))
        with pytest.raises(RestartFreqExceeded, match="max_restarts=2"):
            pool.apply(helpers.square, (2,))
        assert not pool.did_start_ok()
    finally:
        pool.terminate()
        assert pool.join(timeout=10)


def test_stats(fork_ctx):
    with poolx.Pool(2, context=fork_ctx) as pool:
        pool.map(helpers.square, range(10), chunksize=1)
        with pytest.raises(ValueError):
            pool.apply(helpers.raise_value_error)
        stats = pool.stats()
        assert stats["processes"] == 2
        assert stats["submitted"] == 11 and stats["completed"] == 10 and stats["failed"] == 1
        assert len(stats["workers"]) == 2
        for worker in stats["workers"]:
            assert worker["state"] == "idle" and worker["job"] is None
            assert worker["rss"] > 0 and worker["uptime"] >= 0
        assert sum(w["tasks_done"] for w in stats["workers"]) == 11


def test_result_terminate_only_hits_its_own_job(fork_ctx):
    with poolx.Pool(1, context=fork_ctx) as pool:
        finished = pool.apply_async(helpers.square, (2,))
        assert finished.get(10) == 4
        running = pool.apply_async(helpers.sleep, (0.5,))
        wait_until(lambda: any(w["job"] for w in pool.stats()["workers"]))
        finished.terminate()  # its job is over: the running one must not be hit
        assert running.get(10) == 0.5
        running = pool.apply_async(helpers.sleep, (0.5,))
        prefetched = pool.apply_async(helpers.square, (3,))
        wait_until(lambda: any(w["job"] for w in pool.stats()["workers"]))
        prefetched.terminate()  # not started yet: nothing happens
        assert running.get(10) == 0.5
        assert prefetched.get(10) == 9
        victim = pool.apply_async(helpers.sleep, (30,))
        wait_until(lambda: any(w["job"] for w in pool.stats()["workers"]))
        victim.terminate(signal.SIGKILL)
        with pytest.raises(Terminated) as info:
            victim.get(10)
        assert info.value.started is True


def test_a_dropped_pool_releases_its_workers_when_its_last_job_ends(ctx, tmp_path):
    """A pool nobody closed is terminated once nothing refers to it.  Its
    running job keeps it alive (the job holds its result, which holds the
    pool, as in the standard library); when that job ends, the pool is freed
    on the supervisor's own thread, which must not wait for itself."""
    import gc
    import os
    import time

    import psutil

    done = tmp_path / "done"

    def start() -> list[psutil.Process]:
        pool = poolx.Pool(2, context=ctx)
        pool.apply_async(helpers.sleep_then_touch, (0.3, str(done)))
        return [psutil.Process(w["pid"]) for w in wait_until(lambda: pool.stats()["workers"])]

    workers = start()
    gc.collect()
    wait_until(lambda: os.path.exists(done), timeout=30)
    ended = time.monotonic()

    def alive(p: psutil.Process) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:  # reaped between the two questions
            return False

    def gone() -> bool:
        return not any(alive(p) for p in workers)

    wait_until(gone, timeout=30)
    # Before the fix the finalizer waited 2 s for its own thread.
    assert time.monotonic() - ended < 1.5


def test_an_always_failing_initializer_with_max_restarts_gives_restart_freq_exceeded(fork_ctx):
    """billiard: the user's explicit max_restarts wins over the start-failure breaker."""
    with poolx.Pool(1, context=fork_ctx, initializer=helpers.failing_initializer,
                    max_restarts=2, max_restart_freq=60) as pool:
        with pytest.raises(RestartFreqExceeded):
            pool.apply(helpers.square, (2,))

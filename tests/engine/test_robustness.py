"""Misuse and races that must not break a pool, found in review.

Each of these once broke the whole pool (a supervisor crash failing every job)
or left a caller waiting forever.
"""

from __future__ import annotations

import gc
import multiprocessing
import signal

import pytest

import poolx
from poolx.exceptions import Terminated, WorkerLostError
from poolx.pool import MaybeEncodingError
from tests.conftest import wait_until
from tests.engine import helpers, robust_tasks


def _running(result) -> bool:
    """Sent to a worker (not necessarily started: tests that need a started
    job wait for a file the job writes)."""
    return bool(result.worker_pids())


def test_a_second_terminate_of_a_job_that_ignores_sigterm_is_harmless(ctx, tmp_path):
    ready = tmp_path / "handler-installed"
    with poolx.Pool(2, context=ctx) as pool:
        other = pool.apply_async(helpers.sleep, (0.5,))
        stubborn = pool.apply_async(robust_tasks.ignore_sigterm_then_sleep, (30, str(ready)))
        wait_until(lambda: _running(other) and ready.exists())
        stubborn.terminate()
        with pytest.raises(Terminated):
            stubborn.get(10)
        stubborn.terminate()  # the worker still runs it (SIGTERM ignored)
        pool.terminate_job(stubborn.worker_pids()[0], signal.SIGTERM)
        assert other.get(10) == 0.5
        assert pool.broken is None
        assert pool.apply(helpers.square, (3,)) == 9


def test_an_invalid_signal_is_the_callers_error_and_the_pool_keeps_working(tmp_path):
    started = tmp_path / "started"
    with poolx.Pool(1) as pool:
        job = pool.apply_async(robust_tasks.ignore_sigterm_then_sleep, (30, str(started)))
        wait_until(started.exists)
        with pytest.raises(ValueError):
            job.terminate(999)
        with pytest.raises(ValueError):
            pool.terminate_job(job.worker_pids()[0], 999)
        with pytest.raises((ValueError, TypeError)):
            pool.terminate_job(job.worker_pids()[0], "TERM")
        assert pool.broken is None
        job.terminate(signal.SIGKILL)
        with pytest.raises(Terminated):
            job.get(10)
        assert pool.apply(helpers.square, (4,)) == 16


def test_a_result_whose_rebuild_raises_systemexit_fails_only_its_job(ctx):
    with poolx.Pool(2, context=ctx) as pool:
        bad = pool.apply_async(robust_tasks.result_that_exits_when_rebuilt)
        with pytest.raises(MaybeEncodingError):
            bad.get(10)
        assert pool.broken is None
        assert pool.apply(helpers.square, (5,)) == 25


def test_a_worker_whose_forked_child_lingers_is_still_seen_dying():
    # fork only: the lingering child must hold the worker's inherited fds
    with poolx.Pool(1, context=multiprocessing.get_context("fork")) as pool:
        job = pool.apply_async(robust_tasks.fork_lingering_child_then_die, (30,))
        with pytest.raises(WorkerLostError):
            job.get(10)
        assert pool.apply(helpers.square, (6,)) == 36


@pytest.mark.parametrize("method", ["map_async", "starmap_async", "imap", "imap_unordered"])
def test_a_result_keeps_its_pool_alive(method):
    """The standard library's results hold their pool: a pool nobody kept
    (``for x in Pool(2).imap(f, xs)``) still finishes the work."""
    args = [(i,) for i in range(4)] if method == "starmap_async" else range(4)
    result = getattr(poolx.Pool(2), method)(helpers.square, args)
    gc.collect()
    values = result.get(20) if method.endswith("_async") else list(result)
    assert sorted(values) == [0, 1, 4, 9]


def test_a_worker_that_leaves_for_a_kill_aimed_at_its_finished_job_is_not_a_crash(fork_ctx):
    """The worker may finish the targeted job and exit (EXIT_KILL_PENDING)
    just as the parent decides that the job was no longer running: the exit is
    the supervisor's doing, not a crash counted against max_restarts.  Here
    the kill target is written the way the supervisor writes it, for the job
    the worker is about to finish."""
    from poolx.engine.worker import EXIT_KILL_PENDING, KILL_TARGET

    codes = {}
    with poolx.Pool(1, context=fork_ctx, max_restarts=0,
                    on_process_exit=lambda pid, code: codes.setdefault(pid, code)) as pool:
        job = pool.apply_async(helpers.sleep, (0.3,))
        wait_until(lambda: _running(job))
        pid = job.worker_pids()[0]
        handle = pool._supervisor.call(lambda sup: sup.workers.get(pid))
        wait_until(lambda: handle.slot[0] != 0)  # slot[RUNNING]: the job started
        handle.slot[KILL_TARGET] = handle.slot[0]  # as kill_if_running does, then "too late"
        assert job.get(10) == 0.3
        wait_until(lambda: pid in codes)
        assert codes[pid] == EXIT_KILL_PENDING
        assert pool.broken is None
        assert pool.apply(helpers.square, (2,)) == 4


def test_jobs_prefetched_by_a_worker_whose_job_ignores_terminate_go_elsewhere(tmp_path):
    ready = tmp_path / "handler-installed"
    with poolx.Pool(1) as pool:
        stubborn = pool.apply_async(robust_tasks.ignore_sigterm_then_sleep, (30, str(ready)))
        behind = pool.apply_async(helpers.square, (7,))  # prefetched behind it
        wait_until(ready.exists)
        stubborn.terminate()
        with pytest.raises(Terminated):
            stubborn.get(10)
        assert behind.get(10) == 49


def test_no_old_worker_starts_a_job_after_restart(fork_ctx, tmp_path):
    started = tmp_path / "started"
    with poolx.Pool(1, context=fork_ctx) as pool:
        old = pool.apply(robust_tasks.pid_after, (0,))
        first = pool.apply_async(robust_tasks.pid_after, (0.3, str(started)))
        wait_until(started.exists)
        later = [pool.apply_async(robust_tasks.pid_after, (0,)) for _ in range(5)]
        pool.restart()
        assert first.get(10) == old
        assert old not in [r.get(10) for r in later]


def test_imap_feeder_wakes_when_results_complete_out_of_order():
    """A slow first item must not stall the rest of an imap: the others
    complete on the second worker while it runs (all but the few prefetched
    behind it; a stalled feeder stops at its window, ~250)."""
    with poolx.Pool(2) as pool:
        it = pool.imap(helpers.sleep, [30.0] + [0.0] * 2000)
        wait_until(lambda: pool.stats()["completed"] >= 1500, timeout=30)
        pool.terminate()
        del it


def test_terminating_an_executor_call_twice_returns_false_the_second_time(tmp_path):
    ready = tmp_path / "handler-installed"
    with poolx.ProcessPoolExecutor(2) as executor:
        future = executor.submit(robust_tasks.ignore_sigterm_then_sleep, 30, str(ready))
        wait_until(ready.exists)
        assert executor.terminate(future) is True
        assert executor.terminate(future) is False
        with pytest.raises(Terminated):
            future.result(10)
        assert executor.submit(helpers.square, 8).result(10) == 64

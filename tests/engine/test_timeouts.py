"""Soft and hard time limits, pool-wide and per call, with billiard's callbacks."""

from __future__ import annotations

import threading
import time

import pytest

import poolx
from poolx.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from tests.engine import helpers


def test_soft_limit_is_raised_inside_the_task(ctx):
    with poolx.Pool(1, soft_timeout=0.2, context=ctx) as pool:
        assert pool.apply(helpers.soft_aware_sleep, (10,)) == "soft"
        with pytest.raises(SoftTimeLimitExceeded):  # the real class, not a wrapper
            pool.apply(helpers.sleep, (10,))
        assert pool.apply(helpers.square, (3,)) == 9


def test_hard_limit_kills_the_worker_and_the_next_job_runs(ctx):
    with poolx.Pool(1, timeout=0.3, context=ctx) as pool:
        pid = pool.apply(helpers.getpid)
        started = time.monotonic()
        with pytest.raises(TimeLimitExceeded):
            pool.apply(helpers.sleep, (10,))
        assert time.monotonic() - started < 5
        assert pool.apply(helpers.getpid) != pid
        assert pool.stats()["timed_out"] == 1


def test_swallowed_soft_limit_still_meets_the_hard_limit(fork_ctx):
    with poolx.Pool(1, soft_timeout=0.1, timeout=0.4, context=fork_ctx) as pool:
        with pytest.raises(TimeLimitExceeded):
            pool.apply(helpers.swallow_soft_limit, (10,))
        assert pool.apply(helpers.square, (2,)) == 4


def test_per_call_limits_work_without_pool_limits(fork_ctx):
    with poolx.Pool(1, context=fork_ctx) as pool:
        assert pool.apply(helpers.soft_aware_sleep, (10,), soft_timeout=0.1) == "soft"
        with pytest.raises(TimeLimitExceeded):
            pool.apply_async(helpers.sleep, (10,), timeout=0.2).get(10)
        assert pool.apply(helpers.sleep, (0.3,)) == 0.3  # no limit on this one


def test_per_call_limits_override_the_pool(fork_ctx):
    with poolx.Pool(1, timeout=0.2, context=fork_ctx) as pool:
        assert pool.apply(helpers.sleep, (0.4,), timeout=5) == 0.4
        with pytest.raises(TimeLimitExceeded):
            pool.apply(helpers.sleep, (5,))


def test_map_limits_apply_per_chunk(fork_ctx):
    with poolx.Pool(2, context=fork_ctx) as pool:
        with pytest.raises(TimeLimitExceeded):
            pool.map(helpers.sleep, [0.01, 10, 0.01], chunksize=1, timeout=0.3)
        # each chunk of two short sleeps fits in the limit
        assert pool.map(helpers.sleep, [0.1] * 4, chunksize=2, timeout=1) == [0.1] * 4
        results = pool.imap(helpers.sleep, [0.01, 10, 0.02], timeout=0.3)
        assert next(results) == 0.01
        with pytest.raises(TimeLimitExceeded):
            next(results)
        assert next(results) == 0.02
        unordered = list(pool.imap_unordered(helpers.soft_aware_sleep, [10, 10], soft_timeout=0.1))
        assert unordered == ["soft", "soft"]
        assert pool.starmap(helpers.add, [(1, 2)], timeout=5) == [3]


def test_timeout_callbacks_have_billiards_signatures(fork_ctx):
    events = []
    lock = threading.Lock()

    def record(*args, **kwargs):
        with lock:
            events.append((args, kwargs))

    with poolx.Pool(
        1, context=fork_ctx,
        on_timeout_set=lambda job, soft, hard: record("set", soft, hard),
        on_timeout_cancel=lambda job: record("cancel"),
    ) as pool:
        accepted = threading.Event()
        result = pool.apply_async(
            helpers.soft_aware_sleep, (10,), soft_timeout=0.1, timeout=5,
            accept_callback=lambda pid, when: (record("accept", pid), accepted.set()),
            timeout_callback=lambda soft, timeout: record("timeout", soft=soft, timeout=timeout),
        )
        assert result.get(10) == "soft"
        assert accepted.wait(5)
        hard = pool.apply_async(helpers.sleep, (10,), timeout=0.1,
                                timeout_callback=lambda soft, timeout: record("timeout", soft=soft,
                                                                             timeout=timeout))
        with pytest.raises(TimeLimitExceeded):
            hard.get(10)
        pool.close()
        pool.join()
    names = [args[0] for args, _ in events]
    assert names.count("set") == 2
    assert names.count("cancel") == 1  # the first job finished within its hard limit
    assert (("accept", result.worker_pids()[0]), {}) in events
    assert (("timeout",), {"soft": True, "timeout": 0.1}) in events
    assert (("timeout",), {"soft": False, "timeout": 0.1}) in events


def test_soft_limit_never_hits_another_job(fork_ctx):
    """1,000 jobs that run about as long as their soft limit, each followed by
    a job without limits, while slow callbacks delay the parent: a soft-limit
    signal must never land in the wrong job or an idle worker."""

    def slow_callback(value):
        end = time.perf_counter() + 0.0005
        while time.perf_counter() < end:  # keep the callback thread busy
            pass

    with poolx.Pool(2, context=fork_ctx) as pool:
        limited, free = [], []
        for i in range(1000):
            limited.append(pool.apply_async(helpers.soft_aware_sleep, (0.004,), soft_timeout=0.004,
                                            callback=slow_callback))
            free.append(pool.apply_async(helpers.no_limit_job, (i,), callback=slow_callback))
        outcomes = []
        for result in limited:
            # The limit may land anywhere in *its own* job, also just outside
            # the job's try block: then the job fails with the real exception.
            try:
                outcomes.append(result.get(60))
            except SoftTimeLimitExceeded:
                outcomes.append("raised")
        assert [r.get(60) for r in free] == [("ok", i) for i in range(1000)]
        assert set(outcomes) <= {"ok", "soft", "raised"}
        stats = pool.stats()
        assert stats["restarts"] == 0 and stats["workers_started"] == 2
        assert stats["failed"] == outcomes.count("raised")


def test_a_hard_limit_shorter_than_the_soft_one_is_not_held_back_by_it(fork_ctx):
    """The soft deadline comes later: the hard one must fire at its own time
    (once it waited for the soft deadline first, here 30 s)."""
    with poolx.Pool(1, soft_timeout=30, context=fork_ctx) as pool:
        job = pool.apply_async(helpers.sleep, (60,), timeout=0.2)
        with pytest.raises(TimeLimitExceeded):
            job.get(10)

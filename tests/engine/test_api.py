"""multiprocessing.Pool's API, behaviour for behaviour (every start method)."""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.pool
import os
import threading
import weakref

import pytest

import poolx
from poolx.engine.results import BaseJobSink
from poolx.exceptions import PoolNotRunning
from poolx.pool import MaybeEncodingError, RemoteTraceback
from tests.engine import helpers


def test_apply_and_apply_async(pool):
    assert pool.apply(helpers.add, (2, 3)) == 5
    assert pool.apply(helpers.add, (), {"a": 1, "b": 2}) == 3
    result = pool.apply_async(helpers.square, (7,))
    assert result.get(timeout=10) == 49
    assert result.ready() and result.successful()


def test_map_family_keeps_order(pool):
    data = list(range(200))
    expected = [x * x for x in data]
    assert pool.map(helpers.square, data) == expected
    assert pool.map(helpers.square, data, chunksize=7) == expected
    assert pool.map(helpers.square, iter(data)) == expected
    assert pool.map_async(helpers.square, data).get(10) == expected
    assert pool.starmap(helpers.add, [(i, i) for i in range(50)]) == [2 * i for i in range(50)]
    assert pool.starmap_async(helpers.add, [(1, 2)]).get(10) == [3]
    assert list(pool.imap(helpers.square, data)) == expected
    assert list(pool.imap(helpers.square, data, chunksize=9)) == expected
    assert sorted(pool.imap_unordered(helpers.square, data, chunksize=4)) == expected


def test_empty_input(pool):
    assert pool.map(helpers.square, []) == []
    assert pool.starmap(helpers.add, []) == []
    assert list(pool.imap(helpers.square, [])) == []
    assert list(pool.imap_unordered(helpers.square, [])) == []
    result = pool.map_async(helpers.square, [])
    assert result.ready() and result.get() == []


def test_result_not_ready_and_timeout(pool):
    result = pool.apply_async(helpers.sleep, (0.5,))
    with pytest.raises(ValueError, match="not ready"):
        result.successful()
    with pytest.raises(poolx.TimeoutError):
        result.get(timeout=0.01)
    assert poolx.TimeoutError is multiprocessing.TimeoutError
    result.wait(0.01)
    assert not result.ready()
    assert result.get(timeout=10) == 0.5


def test_imap_next_timeout(pool):
    iterator = pool.imap(helpers.sleep, [0.3, 0.0])
    with pytest.raises(poolx.TimeoutError):
        iterator.next(timeout=0.01)
    assert iterator.next(timeout=10) == 0.3
    assert next(iterator) == 0.0
    with pytest.raises(StopIteration):
        next(iterator)


def test_worker_exception_carries_remote_traceback(pool):
    with pytest.raises(ValueError, match="kaput") as info:
        pool.apply(helpers.raise_value_error, ("kaput",))
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "raise_value_error" in str(info.value.__cause__)
    assert RemoteTraceback is multiprocessing.pool.RemoteTraceback
    result = pool.apply_async(helpers.raise_value_error)
    result.wait(10)
    assert result.ready() and not result.successful()


def test_map_error_is_raised_and_later_items_do_not_matter(pool):
    with pytest.raises(ZeroDivisionError):
        pool.map(lambda x: 1 // x, [1, 0, 2])
    iterator = pool.imap(lambda x: 1 // x, [1, 0, 2])
    assert next(iterator) == 1
    with pytest.raises(ZeroDivisionError):
        next(iterator)
    assert next(iterator) == 0


def test_callbacks_run_before_ready_and_get_the_exception_instance(pool):
    seen = []
    done = threading.Event()
    result = pool.apply_async(helpers.square, (4,), callback=seen.append)
    assert result.get(10) == 16
    assert seen == [16]  # as in the standard library: the callback ran before get() returned
    errors = []
    result = pool.apply_async(helpers.raise_value_error, ("x",),
                              error_callback=lambda e: (errors.append(e), done.set()))
    assert done.wait(10)
    assert isinstance(errors[0], ValueError)
    mapped = []
    pool.map_async(helpers.square, [1, 2], callback=mapped.append).get(10)
    assert mapped == [[1, 4]]


def test_unpicklable_result_is_maybe_encoding_error(pool):
    with pytest.raises(MaybeEncodingError, match="Error sending result"):
        pool.apply(helpers.return_unpicklable)
    assert MaybeEncodingError is multiprocessing.pool.MaybeEncodingError
    assert pool.apply(helpers.square, (3,)) == 9


def test_lambdas_and_closures(pool):
    offset = 10
    assert pool.map(lambda x: x + offset, [1, 2]) == [11, 12]

    def closure(x):
        return x * offset

    assert pool.apply(closure, (3,)) == 30
    assert list(pool.imap_unordered(closure, [1])) == [10]


def test_close_join_and_not_running(ctx):
    pool = poolx.Pool(2, context=ctx)
    results = [pool.apply_async(helpers.square, (i,)) for i in range(20)]
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply_async(helpers.square, (1,))
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(helpers.square, [1])
    pool.join()
    assert [r.get(0) for r in results] == [i * i for i in range(20)]


def test_join_while_running_is_an_error(pool):
    with pytest.raises(ValueError, match="still running"):
        pool.join()


def test_with_block_terminates_and_pool_is_unusable_after(ctx):
    with poolx.Pool(1, context=ctx) as pool:
        assert pool.apply(helpers.square, (2,)) == 4
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply(helpers.square, (2,))
    with pytest.raises(ValueError):
        with pool:
            pass


def test_initializer_runs_once_per_worker(ctx, tmp_path):
    path = tmp_path / "inits"
    with poolx.Pool(2, initializer=helpers.record_init, initargs=(str(path),), context=ctx) as pool:
        pids = set(pool.map(helpers.getpid, range(40), chunksize=1))
        inits = path.read_text().split()
    assert sorted(inits) == sorted(set(inits))
    assert pids <= {int(p) for p in inits}


def test_maxtasksperchild_recycles_workers(ctx):
    with poolx.Pool(2, maxtasksperchild=3, context=ctx) as pool:
        pids = [pool.apply(helpers.getpid) for _ in range(12)]
    assert len(set(pids)) >= 4
    for pid in set(pids):
        assert pids.count(pid) <= 3


def test_input_iterable_that_raises(pool):
    def bad_input():
        yield 1
        yield 2
        raise KeyError("input broke")

    with pytest.raises(KeyError, match="input broke"):
        pool.map(helpers.square, bad_input())
    iterator = pool.imap(helpers.square, bad_input())
    assert next(iterator) == 1
    assert next(iterator) == 4
    with pytest.raises(KeyError, match="input broke"):
        next(iterator)
    assert pool.map(helpers.square, [3]) == [9]  # still usable


def test_pool_drops_arguments_and_results(pool):
    result = pool.apply_async(helpers.make_weakrefable, (5,))
    value = result.get(10)
    ref = weakref.ref(value)
    del value, result
    gc.collect()
    assert ref() is None
    arg = helpers.Weakrefable(1)
    arg_ref = weakref.ref(arg)
    pool.apply(helpers.identity, (arg,))
    del arg
    gc.collect()
    assert arg_ref() is None


def test_processes_zero_then_grow(ctx):
    with poolx.Pool(0, context=ctx) as pool:
        assert pool.processes == pool._processes == 0
        result = pool.apply_async(helpers.square, (3,))
        assert not result.ready()
        pool.grow(1)
        assert result.get(30) == 9
        assert pool.processes == pool._processes == 1


def test_billiard_extras_exist(pool):
    assert pool.cpu_count() == (os.cpu_count() or 1)
    assert pool.did_start_ok()
    pool.apply(helpers.square, (1,))
    sentinels = pool.process_sentinels
    assert len(sentinels) == 2 and all(isinstance(s, int) for s in sentinels)
    pool.maintain_pool()


def test_billiard_constructor_arguments_are_accepted(ctx):
    with poolx.Pool(
        1, context=ctx, timeout=10, soft_timeout=5, lost_worker_timeout=10, max_restarts=100,
        max_restart_freq=1, threads=True, semaphore=None, putlocks=False, allow_restart=True,
        synack=False, max_memory_per_child=10**7, enable_timeouts=True,
        on_process_up=lambda p: None, on_process_down=lambda p: None,
        on_process_exit=lambda pid, code: None, on_timeout_set=lambda *a: None,
        on_timeout_cancel=lambda j: None,
    ) as pool:
        result = pool.apply_async(
            helpers.square, (5,), accept_callback=lambda pid, t: None,
            timeout_callback=lambda soft, timeout: None, waitforslot=False, soft_timeout=4,
            timeout=9, lost_worker_timeout=5, callbacks_propagate=(), correlation_id="abc",
        )
        assert result.get(30) == 25
        assert result.correlation_id == "abc"


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"processes": -1}, ValueError, "Number of processes must be at least 0"),
        ({"processes": True}, TypeError, "processes must be an int"),
        ({"processes": "2"}, TypeError, "processes must be an int"),
        ({"maxtasksperchild": 0}, ValueError, "maxtasksperchild must be a positive int or None"),
        ({"maxtasksperchild": False}, ValueError, "maxtasksperchild must be a positive int or None"),
        ({"initializer": 3}, TypeError, "initializer must be a callable"),
        ({"timeout": -1}, ValueError, "timeout must be a positive number"),
        ({"soft_timeout": True}, TypeError, "soft_timeout must be a number"),
        ({"memory_limit": "lots"}, ValueError, "memory_limit must be"),
        ({"bogus": 1}, TypeError, "bogus"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        poolx.Pool(**kwargs)


def test_bad_call_arguments(pool):
    with pytest.raises(ValueError, match=r"Chunksize must be 1\+, not 0"):
        pool.map(helpers.square, [1], chunksize=0)
    with pytest.raises(TypeError, match="chunksize must be an int"):
        pool.imap(helpers.square, [1], chunksize=True)
    with pytest.raises(ValueError, match="timeout must be a positive"):
        pool.apply_async(helpers.square, (1,), timeout=0)
    with pytest.raises(TypeError, match="callback must be callable"):
        pool.apply_async(helpers.square, (1,), callback=1)


def test_pool_cannot_be_pickled(pool):
    import pickle

    with pytest.raises(NotImplementedError):
        pickle.dumps(pool)


def test_closing_an_empty_pool_fails_its_queued_jobs(fork_ctx):
    pool = poolx.Pool(0, context=fork_ctx)
    result = pool.apply_async(helpers.square, (3,))
    pool.close()
    assert pool.join(timeout=10)
    with pytest.raises(poolx.BrokenPoolError, match="closed with 0 processes"):
        result.get(0)


def test_imap_then_close_delivers_everything(ctx):
    """The standard library's pattern: close() forbids new calls, but the
    input of an imap already running is read to the end."""
    pool = poolx.Pool(2, context=ctx)
    ordered = pool.imap(helpers.square, range(3000))
    unordered = pool.imap_unordered(helpers.square, (i for i in range(1000)))
    pool.close()
    assert list(ordered) == [i * i for i in range(3000)]
    assert sorted(unordered) == [i * i for i in range(1000)]
    assert pool.join(timeout=30)


class _Sink(BaseJobSink):
    """A JobSink that records what the supervisor tells it."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.done = threading.Event()
        self.outcome: tuple[bool, object] | None = None
        self.seconds: float | None = None

    def job_sent(self, pid: int) -> None:
        self.sent.append(pid)

    def job_done(self, index: int, ok: bool, value: object, seconds: float | None = None) -> None:
        self.outcome = (ok, value)
        self.seconds = seconds
        self.done.set()


def test_submit_jobs_hands_the_calls_to_the_supervisor_together(fork_ctx, monkeypatch):
    """Pool.submit_jobs (poolx's own front ends, such as the queue consumer):
    the calls reach the supervisor in one hand-over, each with its own
    limits; a call that cannot be pickled is not submitted and its
    exception takes its place in the answer, the others run."""
    pool = poolx.Pool(1, context=fork_ctx)
    try:
        handed: list[int] = []
        submit = pool._supervisor.submit

        def counted(jobs):
            handed.append(len(jobs))
            submit(jobs)

        monkeypatch.setattr(pool._supervisor, "submit", counted)
        sinks = [_Sink() for _ in range(4)]
        seqs = pool.submit_jobs([
            (sinks[0], helpers.square, (3,), None, None, None),
            (sinks[1], helpers.identity, (lambda: None,), None, None, None),  # not picklable
            (sinks[2], helpers.sleep, (30,), None, 0.2, None),  # its own hard limit
            (sinks[3], helpers.add, (1, 2), None, None, None),
        ])
        assert handed == [3]
        assert isinstance(seqs[1], Exception) and not sinks[1].sent
        assert all(isinstance(seq, int) for i, seq in enumerate(seqs) if i != 1)
        assert len({seqs[0], seqs[2], seqs[3]}) == 3
        for i in (0, 2, 3):
            assert sinks[i].done.wait(30)
        assert sinks[0].outcome == (True, 9)
        assert sinks[3].outcome == (True, 3)
        ok, error = sinks[2].outcome
        assert not ok and isinstance(error, poolx.TimeLimitExceeded)
        # The worker's run time, as the pool's task tally counts it: only
        # for a job its worker returned (not one killed at its limit).
        assert isinstance(sinks[0].seconds, float) and 0 <= sinks[0].seconds < 10
        assert sinks[2].seconds is None
        pool.close()
        with pytest.raises(PoolNotRunning):
            pool.submit_jobs([(_Sink(), helpers.square, (1,), None, None, None)])
        assert handed == [3]
    finally:
        pool.terminate()
        pool.join()


def test_a_job_submitted_by_a_sink_on_the_supervisor_thread_runs(fork_ctx):
    """A sink may submit the next job from job_done, on the supervisor's own
    thread (the queue consumer does): that job is taken without a wake-up."""
    pool = poolx.Pool(1, context=fork_ctx)
    try:
        second = _Sink()

        class Chained(_Sink):
            def job_done(self, index: int, ok: bool, value: object,
                         seconds: float | None = None) -> None:
                pool.submit_jobs([(second, helpers.square, (value,), None, None, None)])
                super().job_done(index, ok, value, seconds)

        first = Chained()
        pool.submit_jobs([(first, helpers.square, (3,), None, None, None)])
        assert first.done.wait(30) and first.outcome == (True, 9)
        assert second.done.wait(30) and second.outcome == (True, 81)
    finally:
        pool.terminate()
        pool.join()

"""poolx.ProcessPoolExecutor: the standard library's semantics, under every start method.

Each test mirrors a point of ``Lib/concurrent/futures/process.py`` (or of
CPython's own tests for it), plus the one intended difference: a dead worker
fails only its own future.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import time
from concurrent.futures.process import BrokenProcessPool, _RemoteTraceback

import pytest

import poolx
import poolx.futures
from poolx.exceptions import BrokenPoolError, WorkerLostError
from tests.conftest import wait_until
from tests.engine import executor_tasks as tasks


@pytest.fixture
def executor(ctx):
    ex = poolx.ProcessPoolExecutor(2, mp_context=ctx)
    yield ex
    ex.shutdown(kill_workers=True)


def test_public_names():
    assert poolx.futures.ProcessPoolExecutor is poolx.ProcessPoolExecutor
    assert issubclass(poolx.ProcessPoolExecutor, cf.Executor)
    assert poolx.futures.wait is cf.wait and poolx.futures.Future is cf.Future
    assert issubclass(WorkerLostError, BrokenProcessPool)
    assert issubclass(BrokenPoolError, BrokenProcessPool)


def test_submit_returns_a_real_future(executor):
    future = executor.submit(pow, 2, 8)
    assert type(future) is cf.Future
    assert future.result(timeout=60) == 256
    assert future.done() and not future.cancelled() and future.exception() is None


def test_submit_keywords(executor):
    assert executor.submit(tasks.mul, 2, y=8).result(timeout=60) == 16
    # fn is positional-only: 'fn' and 'self' are ordinary keyword arguments
    assert executor.submit(tasks.capture, 1, self=2, fn=3).result(timeout=60) == ((1,), {"self": 2, "fn": 3})
    with pytest.raises(TypeError):
        executor.submit(fn=tasks.capture, arg=1)
    with pytest.raises(TypeError):
        executor.submit(arg=1)


def test_lambdas_and_closures(executor):
    offset = 10
    assert executor.submit(lambda x: x + offset, 5).result(timeout=60) == 15
    assert list(executor.map(lambda x: x * offset, range(4))) == [0, 10, 20, 30]


def test_map(executor):
    expected = list(map(pow, range(40), range(40)))
    assert list(executor.map(pow, range(40), range(40))) == expected
    for chunksize in (3, 6, 40, 50):
        assert list(executor.map(pow, range(40), range(40), chunksize=chunksize)) == expected
    assert list(executor.map(pow, range(5), range(3))) == [1, 1, 4]  # the shortest input ends it
    assert list(executor.map(abs, [])) == []


def test_map_chunksize_must_be_positive(executor):
    with pytest.raises(ValueError, match=r"^chunksize must be >= 1\.$"):
        executor.map(pow, range(4), range(4), chunksize=0)


def test_map_raises_at_the_failing_position(executor):
    results = executor.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5])
    assert next(results) == (0, 1)
    assert next(results) == (0, 1)
    with pytest.raises(ZeroDivisionError):
        next(results)


def test_map_timeout(executor):
    results = []
    with pytest.raises(cf.TimeoutError):
        for value in executor.map(tasks.sleep, [0, 0, 30], timeout=2):
            results.append(value)
    assert results == [0, 0]


def test_wait_and_as_completed(executor):
    futures = [executor.submit(tasks.mul, i, i) for i in range(10)]
    done, not_done = cf.wait(futures, timeout=60)
    assert not not_done and {f.result() for f in done} == {i * i for i in range(10)}
    futures = [executor.submit(tasks.mul, i, 2) for i in range(10)]
    assert sorted(f.result() for f in cf.as_completed(futures, timeout=60)) == [i * 2 for i in range(10)]


def test_exception_carries_the_worker_traceback(executor):
    future = executor.submit(tasks.raise_runtime_error)
    with pytest.raises(RuntimeError) as info:
        future.result(timeout=60)
    assert type(info.value) is RuntimeError and info.value.args == (123,)
    cause = info.value.__cause__
    assert type(cause) is _RemoteTraceback
    assert "raise RuntimeError(123)  # the line the traceback test looks for" in cause.tb


def test_system_exit_in_the_call_is_its_result(executor):
    """As the standard library: a call's SystemExit is its future's exception."""
    with pytest.raises(SystemExit):
        executor.submit(tasks.exit_call).result(timeout=60)
    assert executor.submit(tasks.mul, 3, 3).result(timeout=60) == 9


def test_dead_worker_fails_only_its_future(executor):
    """The one intended difference: the standard library breaks the executor."""
    pid = executor.submit(tasks.getpid).result(timeout=60)
    slow = [executor.submit(tasks.sleep, 0.2) for _ in range(4)]
    dying = executor.submit(tasks.die, 7)
    with pytest.raises(BrokenProcessPool) as info:
        dying.result(timeout=60)
    assert isinstance(info.value, WorkerLostError)
    assert "exitcode 7" in str(info.value)
    assert [f.result(timeout=60) for f in slow] == [0.2] * 4
    assert executor.submit(tasks.mul, 6, 7).result(timeout=60) == 42
    assert pid > 0


def test_worker_killed_from_outside(executor):
    future = executor.submit(tasks.sleep, 30)
    wait_until(lambda: any(w["job"] is not None for w in executor.stats()["workers"]))
    busy = [w["pid"] for w in executor.stats()["workers"] if w["job"] is not None]
    os.kill(busy[0], signal.SIGKILL)
    with pytest.raises(WorkerLostError, match=r"signal 9 \(SIGKILL\)"):
        future.result(timeout=60)
    assert list(executor.map(tasks.mul, range(5), range(5))) == [0, 1, 4, 9, 16]


def test_submit_after_shutdown(executor):
    executor.shutdown()
    with pytest.raises(RuntimeError, match=r"^cannot schedule new futures after shutdown$"):
        executor.submit(pow, 2, 5)
    with pytest.raises(RuntimeError, match=r"^cannot schedule new futures after shutdown$"):
        executor.map(abs, [1])
    executor.shutdown()  # idempotent


def test_shutdown_waits_for_every_submitted_call(executor):
    futures = [executor.submit(tasks.sleep, 0.05) for _ in range(20)]
    executor.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [0.05] * 20


def test_shutdown_without_wait_returns_at_once_and_calls_still_finish(executor):
    futures = [executor.submit(tasks.sleep, 0.5) for _ in range(4)]
    started = time.monotonic()
    executor.shutdown(wait=False)
    assert time.monotonic() - started < 0.2
    assert [f.result(timeout=60) for f in futures] == [0.5] * 4


def test_cancel_futures(executor):
    futures = [executor.submit(tasks.sleep, 0.1) for _ in range(50)]
    executor.shutdown(cancel_futures=True)
    cancelled = [f for f in futures if f.cancelled()]
    others = [f for f in futures if not f.cancelled()]
    assert len(cancelled) > 20
    assert others and all(f.done() and f.exception() is None for f in others)
    # wait() and as_completed() hear of the cancellations
    done, not_done = cf.wait(futures, timeout=10)
    assert not not_done


def test_future_cancel_keeps_its_meaning(executor, tmp_path):
    log = str(tmp_path / "runs")
    running = [executor.submit(tasks.sleep, 0.3) for _ in range(2)]
    queued = [executor.submit(tasks.log_run, log, i) for i in range(40)]
    wait_until(lambda: all(f.running() for f in running))
    assert not running[0].cancel()  # a running call cannot be cancelled
    cancelled = [f for f in queued if f.cancel()]
    assert len(cancelled) > 20  # only a few calls per worker are handed to the pool
    executor.shutdown(wait=True)
    ran = {int(v) for v in tasks.runs(log)}
    assert ran == {i for i, f in enumerate(queued) if not f.cancelled()}
    assert [f.result() for f in running] == [0.3, 0.3]


def test_context_manager(ctx):
    with poolx.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        assert list(ex.map(abs, range(-5, 5))) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
        future = ex.submit(tasks.sleep, 0.2)
    assert future.done() and future.result() == 0.2
    with pytest.raises(RuntimeError):
        ex.submit(abs, 1)


def test_initializer(ctx):
    with poolx.ProcessPoolExecutor(2, mp_context=ctx, initializer=tasks.init,
                                   initargs=("initialized",)) as ex:
        assert [ex.submit(tasks.get_init_state).result(timeout=60) for _ in range(4)] == ["initialized"] * 4


def test_initializer_that_always_fails_breaks_the_executor(ctx):
    """As documented for the standard library: pending futures fail with
    BrokenProcessPool, and so does every later submit."""
    ex = poolx.ProcessPoolExecutor(2, mp_context=ctx, initializer=tasks.init_fail)
    try:
        futures = []
        try:
            for _ in range(10):
                futures.append(ex.submit(tasks.get_init_state))
        except BrokenProcessPool:
            pass  # it may break while we submit (as the standard library may)
        assert futures  # the first submit starts the workers: it cannot fail
        for future in futures:
            with pytest.raises(BrokenProcessPool, match="error in initializer"):
                future.result(timeout=60)
        with pytest.raises(BrokenProcessPool, match="initializer failed"):
            ex.submit(tasks.get_init_state)
    finally:
        ex.shutdown(kill_workers=True)


def test_max_tasks_per_child(ctx):
    """The standard library refuses it with fork; poolx supports every start method."""
    with poolx.ProcessPoolExecutor(1, mp_context=ctx, max_tasks_per_child=3) as ex:
        pids = [ex.submit(tasks.getpid).result(timeout=60) for _ in range(4)]
    assert pids[0] == pids[1] == pids[2] != pids[3]


def test_results_are_not_kept(executor):
    import gc
    import weakref

    for obj in executor.map(tasks.make_object, range(10)):
        ref = weakref.ref(obj)
        del obj
        gc.collect()
        assert ref() is None

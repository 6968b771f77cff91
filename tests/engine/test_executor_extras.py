"""The executor's argument checks (the standard library's messages) and what
poolx adds: per-call limits, terminate(future), asyncio, lifecycle callbacks."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import multiprocessing
import os
import signal
import time

import pytest

import poolx
from poolx.engine.executor import PENDING
from poolx.exceptions import (
    MemoryLimitExceeded,
    SoftTimeLimitExceeded,
    Terminated,
    TimeLimitExceeded,
)
from poolx.tally import DURATION_BUCKETS, task_name
from tests.conftest import wait_until
from tests.engine import executor_tasks as tasks
from tests.engine import helpers


@pytest.fixture
def executor(fork_ctx):
    ex = poolx.ProcessPoolExecutor(2, mp_context=fork_ctx)
    yield ex
    ex.shutdown(kill_workers=True)


# -- the standard library's argument errors ------------------------------------------


@pytest.mark.parametrize("number", [0, -1])
def test_max_workers_must_be_positive(number):
    with pytest.raises(ValueError, match="^max_workers must be greater than 0$"):
        poolx.ProcessPoolExecutor(max_workers=number)


def test_max_workers_type():
    with pytest.raises(TypeError):
        poolx.ProcessPoolExecutor(max_workers="2")
    with pytest.raises(TypeError, match="max_workers must be an int"):
        poolx.ProcessPoolExecutor(max_workers=2.5)


def test_mp_context_must_be_a_context():
    with pytest.raises(AttributeError, match="get_start_method"):
        poolx.ProcessPoolExecutor(1, mp_context="fork")


def test_initializer_must_be_callable():
    with pytest.raises(TypeError, match="^initializer must be a callable$"):
        poolx.ProcessPoolExecutor(1, initializer=42)


def test_max_tasks_per_child_checks():
    with pytest.raises(TypeError, match="^max_tasks_per_child must be an integer$"):
        poolx.ProcessPoolExecutor(1, max_tasks_per_child="3")
    with pytest.raises(ValueError, match="^max_tasks_per_child must be >= 1$"):
        poolx.ProcessPoolExecutor(1, max_tasks_per_child=0)


def test_max_tasks_per_child_defaults_to_spawn():
    ex = poolx.ProcessPoolExecutor(1, max_tasks_per_child=3)
    assert ex._mp_context.get_start_method() == "spawn"
    ex.shutdown()
    ex = poolx.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"),
                                   max_tasks_per_child=3)  # the standard library raises here
    assert ex._mp_context.get_start_method() == "fork"
    ex.shutdown()


def test_poolx_arguments_are_checked_at_once():
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        poolx.ProcessPoolExecutor(1, timeout=0)
    with pytest.raises(ValueError, match="memory_limit must be"):
        poolx.ProcessPoolExecutor(1, memory_limit="lots")
    with pytest.raises(TypeError, match="on_process_up must be callable"):
        poolx.ProcessPoolExecutor(1, on_process_up=1)


def test_no_worker_before_the_first_submit(fork_ctx):
    """As the standard library: workers start with the first call."""
    ex = poolx.ProcessPoolExecutor(2, mp_context=fork_ctx)
    assert ex.stats() == {"pending": 0}
    assert ex.submit(tasks.mul, 2, 3).result(timeout=60) == 6
    assert len(ex.stats()["workers"]) == 2
    ex.shutdown()


# -- per-call limits -------------------------------------------------------------------


def test_schedule_is_submit_with_limits(executor):
    future = executor.schedule(tasks.capture, args=(1, 2), kwargs={"k": 3})
    assert future.result(timeout=60) == ((1, 2), {"k": 3})
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        executor.schedule(tasks.sleep, (1,), timeout=-1)


def test_hard_time_limit_kills_the_worker(executor):
    executor.submit(tasks.getpid).result(timeout=60)
    started = time.monotonic()
    future = executor.schedule(tasks.sleep, (30,), timeout=0.3)
    busy = wait_until(lambda: [w["pid"] for w in executor.stats()["workers"] if w["job"] is not None])
    with pytest.raises(TimeLimitExceeded):
        future.result(timeout=30)
    assert time.monotonic() - started < 5  # (the benchmark measures the overshoot: milliseconds)
    wait_until(lambda: busy[0] not in {w["pid"] for w in executor.stats()["workers"]})
    wait_until(lambda: len(executor.stats()["workers"]) == 2)  # replaced
    assert executor.submit(tasks.mul, 2, 2).result(timeout=60) == 4


def test_executor_default_time_limit(fork_ctx):
    with poolx.ProcessPoolExecutor(1, mp_context=fork_ctx, timeout=0.3) as ex:
        with pytest.raises(TimeLimitExceeded):
            ex.submit(tasks.sleep, 30).result(timeout=30)
        assert ex.submit(tasks.sleep, 0.01).result(timeout=30) == 0.01
        # schedule() overrides the default
        assert ex.schedule(tasks.sleep, (0.5,), timeout=5).result(timeout=30) == 0.5


def test_soft_time_limit_is_raised_inside_the_call(executor):
    assert executor.schedule(tasks.soft_aware_sleep, (30,), soft_timeout=0.2).result(timeout=30) == "soft limit"
    with pytest.raises(SoftTimeLimitExceeded):
        executor.schedule(tasks.sleep, (30,), soft_timeout=0.2).result(timeout=30)


def test_memory_limit(executor):
    with pytest.raises(MemoryLimitExceeded):
        executor.schedule(tasks.allocate_forever, memory_limit="300MB").result(timeout=60)
    assert executor.submit(tasks.mul, 3, 4).result(timeout=60) == 12


# -- terminate(future) ----------------------------------------------------------------


def test_terminate_a_running_call(executor):
    future = executor.submit(tasks.sleep, 30)
    wait_until(lambda: any(w["job"] is not None for w in executor.stats()["workers"]))
    assert executor.terminate(future)
    with pytest.raises(Terminated) as info:
        future.result(timeout=30)
    assert info.value.started is True
    assert not executor.terminate(future)  # already done
    assert executor.submit(tasks.mul, 5, 5).result(timeout=60) == 25


def _stages(ex, futures):
    """Where each call is (read from the executor's internals, so that the
    tests below know which path of terminate() they exercise)."""
    items = [ex._core.items[f] for f in futures]
    return {"pending" if item.state == PENDING else "sent" if item.pid else "queued" for item in items}


def _terminate_before_start(ex, tmp_path, warm_up):
    log = str(tmp_path / "runs")
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    if warm_up:  # tiny calls first: the pool then sends several calls at once to a worker
        list(ex.map(tasks.mul, range(300), range(300)))
    blocker = ex.submit(tasks.wait_fifo, fifo, "released")
    victims = [ex.submit(tasks.log_run, log, i) for i in range(10)]
    wait_until(lambda: ex.stats()["workers"][0]["job"] is not None)
    if warm_up:
        wait_until(lambda: ex.stats()["queued"] == 0)
    stages = _stages(ex, victims)
    assert all(ex.terminate(f) for f in victims)
    tasks.release_fifo(fifo)
    assert blocker.result(timeout=60) == "released"
    for future in victims:
        with pytest.raises(Terminated) as info:
            future.result(timeout=60)
        assert info.value.started is False
    assert ex.submit(tasks.mul, 2, 21).result(timeout=60) == 42
    assert tasks.runs(log) == []
    return stages


def test_terminate_calls_waiting_in_the_executor_or_the_pool(fork_ctx, tmp_path):
    with poolx.ProcessPoolExecutor(1, mp_context=fork_ctx) as ex:
        assert _terminate_before_start(ex, tmp_path, warm_up=False) == {"pending", "queued"}


def test_terminate_calls_sent_to_a_busy_worker(fork_ctx, tmp_path):
    """The worker holds them behind a running call: they never start."""
    with poolx.ProcessPoolExecutor(1, mp_context=fork_ctx) as ex:
        assert _terminate_before_start(ex, tmp_path, warm_up=True) == {"sent"}


def test_terminate_ignores_foreign_and_finished_futures(executor):
    future = executor.submit(tasks.mul, 1, 1)
    future.result(timeout=60)
    assert not executor.terminate(future)
    assert not executor.terminate(cf.Future())


# -- asyncio ----------------------------------------------------------------------------


def test_run_in_executor(executor):
    async def main():
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(*(loop.run_in_executor(executor, tasks.mul, i, i)
                                         for i in range(10)))
        return results

    assert asyncio.run(main()) == [i * i for i in range(10)]


def test_cancelling_the_awaiting_task_never_leaves_a_worker_stuck(fork_ctx, tmp_path):
    """A cancelled await cancels the call if it has not been handed to a worker;
    a running call finishes (or is stopped with terminate) and the workers go on."""
    log = str(tmp_path / "runs")
    with poolx.ProcessPoolExecutor(1, mp_context=fork_ctx) as ex:
        async def main():
            loop = asyncio.get_running_loop()
            running = loop.run_in_executor(ex, tasks.sleep, 0.5)
            queued = [loop.run_in_executor(ex, tasks.log_run, log, i) for i in range(20)]
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(running, *queued), 0.1)
            return await loop.run_in_executor(ex, tasks.mul, 6, 7)

        assert asyncio.run(main()) == 42
    assert len(tasks.runs(log)) < 20  # the ones never handed to the worker did not run


# -- callbacks, stats ---------------------------------------------------------------------


def test_lifecycle_callbacks_see_futures(fork_ctx):
    ups, timed, finished = [], [], []
    with poolx.ProcessPoolExecutor(1, mp_context=fork_ctx, on_process_up=ups.append,
                                   on_timeout_set=lambda f, soft, hard: timed.append((f, hard)),
                                   on_timeout_cancel=finished.append) as ex:
        future = ex.schedule(tasks.mul, (2, 3), timeout=10)
        assert future.result(timeout=60) == 6
        wait_until(lambda: finished)
    assert ups and timed == [(future, 10.0)] and finished == [future]


def test_stats_count_pending_calls(fork_ctx, tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    with poolx.ProcessPoolExecutor(1, mp_context=fork_ctx) as ex:
        blocker = ex.submit(tasks.wait_fifo, fifo)
        others = [ex.submit(tasks.mul, i, 1) for i in range(20)]
        wait_until(lambda: blocker.running())
        assert ex.stats()["pending"] == 20 - 2  # two calls per worker, plus one, are in the pool
        tasks.release_fifo(fifo)
        assert [f.result(timeout=60) for f in others] == list(range(20))
        assert ex.stats()["pending"] == 0


def test_stats_time_calls_per_submitted_function(executor):
    """``stats()["tasks"]`` has run times per submitted function, as a
    Pool's do per job: of the calls that returned or raised in their worker
    (a map's chunk once), not of those killed for their hard time limit."""
    started = time.monotonic()
    assert executor.submit(tasks.sleep, 0.2).result(timeout=60) == 0.2  # the work it simulates
    elapsed = time.monotonic() - started
    with pytest.raises(RuntimeError):
        executor.submit(tasks.raise_runtime_error).result(timeout=60)
    with pytest.raises(SoftTimeLimitExceeded):
        executor.schedule(helpers.sleep, (30,), soft_timeout=0.2).result(timeout=60)
    with pytest.raises(TimeLimitExceeded):
        executor.schedule(helpers.sleep, (30,), timeout=0.2).result(timeout=60)
    assert list(executor.map(tasks.mul, range(6), range(6), chunksize=2)) == [i * i for i in range(6)]
    counts = executor.stats()["tasks"]
    slept = counts[task_name(tasks.sleep)]["duration"]
    assert slept["count"] == 1
    assert 0.2 <= slept["sum"] <= elapsed
    assert slept["buckets"][DURATION_BUCKETS.index(0.1)] == 0 and slept["buckets"][-1] == 1
    raised = counts[task_name(tasks.raise_runtime_error)]
    assert raised["failed"]["error"] == 1 and raised["duration"]["count"] == 1
    assert 0 <= raised["duration"]["sum"] < 10
    limited = counts[task_name(helpers.sleep)]
    assert limited["failed"]["timeout"] == 2
    assert limited["duration"]["count"] == 1  # it raised its soft limit; the killed one has none
    assert 0 < limited["duration"]["sum"] < 10
    mapped = counts[task_name(tasks.mul)]
    assert mapped["succeeded"] == 3 and mapped["duration"]["count"] == 3  # one per chunk


def test_shutdown_with_wait_from_a_done_callback_cannot_join_itself(executor):
    errors = []

    def callback(future):
        try:
            executor.shutdown(wait=True)
        except RuntimeError as exc:
            errors.append(str(exc))

    executor.submit(tasks.mul, 1, 2).add_done_callback(callback)
    wait_until(lambda: errors)
    assert errors == ["cannot join current thread"]


def test_sigint_in_a_running_call_raises_keyboard_interrupt_in_it(executor):
    """As in the standard library's executor: the future holds the KeyboardInterrupt."""
    future = executor.submit(helpers.interrupt_self)
    with pytest.raises(KeyboardInterrupt):
        future.result(timeout=30)
    assert executor.submit(helpers.interrupt_self, True).result(timeout=30) == "interrupted"


def test_sigint_does_not_disturb_idle_workers(executor):
    assert executor.submit(tasks.mul, 2, 3).result(timeout=30) == 6
    for worker in executor.stats()["workers"]:
        os.kill(worker["pid"], signal.SIGINT)
    assert executor.submit(tasks.mul, 3, 3).result(timeout=30) == 9
    assert executor.stats()["lost"] == 0


def test_cancel_then_shutdown_does_not_hang(fork_ctx, tmp_path):
    """CPython gh-94440, with the cancelled call still waiting in the executor."""
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    ex = poolx.ProcessPoolExecutor(1, mp_context=fork_ctx)
    blocker = ex.submit(tasks.wait_fifo, fifo, "done")
    queued = [ex.submit(int) for _ in range(5)]
    assert queued[-1].cancel()
    ex.submit(int).cancel()
    tasks.release_fifo(fifo)
    ex.shutdown(wait=True)
    assert blocker.result() == "done" and queued[-1].cancelled()

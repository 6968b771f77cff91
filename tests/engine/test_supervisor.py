"""The supervisor driven through its own public API (no Pool in between)."""

from __future__ import annotations

import multiprocessing

import pytest

from poolx.engine import wire
from poolx.engine.config import PoolConfig
from poolx.engine.jobs import Job
from poolx.engine.results import ApplyResult
from poolx.engine.supervisor import Supervisor
from tests.conftest import wait_until
from tests.engine import helpers


def _config(processes: int = 2, **overrides) -> PoolConfig:
    settings = dict(
        processes=processes, context=multiprocessing.get_context("fork"), initializer=None,
        initargs=(), maxtasksperchild=None, max_memory_per_child=None, soft_timeout=None,
        timeout=None, memory_limit=None, memory_poll_interval=0.05, max_restarts=None,
        max_restart_freq=1.0, on_process_up=None, on_process_down=None, on_process_exit=None,
        on_timeout_set=None, on_timeout_cancel=None,
    )
    settings.update(overrides)
    return PoolConfig(**settings)


@pytest.fixture
def supervisor():
    sup = Supervisor(_config())
    sup.start()
    yield sup
    sup.stop_accepting()
    if sup.post(sup.terminate):
        assert sup.finished.wait(10)


def _apply(sup: Supervisor, func, args=(), **limits) -> tuple[Job, ApplyResult]:
    result = ApplyResult(sup.runner)
    job = Job(sup.next_seq(), result, 0, sup.segments.dumps_job(func, args, {}, wire.APPLY), **limits)
    return job, result


def _timer_state(sup: Supervisor) -> tuple[int, int, int]:
    return sup.call(lambda s: (len(s.timers), s.timers.dead, s.limits.armed))


def test_finished_jobs_leave_no_timer_behind(supervisor):
    pairs = [_apply(supervisor, helpers.square, (i,), soft_timeout=30.0, timeout=60.0,
                    memory_limit=2**40) for i in range(300)]
    supervisor.submit([job for job, _ in pairs])
    assert [result.get(30) for _, result in pairs] == [i * i for i in range(300)]
    # Every deadline and memory poll went with its job: nothing waits 60 s
    # in the heap (only a poll whose cancel is still on its way may linger).
    wait_until(lambda: _timer_state(supervisor) == (0, 0, 0), timeout=5)


def test_commands_run_on_the_supervisor_thread(supervisor):
    assert supervisor.post(supervisor.grow, 1)
    wait_until(lambda: supervisor.call(lambda s: s.workers.live()) == 3)
    supervisor.call(lambda s: s.shrink(2))
    assert supervisor.call(Supervisor.snapshot)["processes"] == 1
    wait_until(lambda: len(supervisor.call(Supervisor.snapshot)["workers"]) == 1)
    with pytest.raises(ZeroDivisionError):
        supervisor.call(lambda s: 1 / 0)  # handed back to the caller
    job, result = _apply(supervisor, helpers.square, (7,))
    supervisor.submit([job])
    assert result.get(10) == 49


def test_a_finished_supervisor_refuses_commands_and_runs_calls_inline():
    sup = Supervisor(_config(processes=1))
    sup.start()
    sup.stop_accepting()
    assert sup.post(sup.terminate)
    assert sup.finished.wait(10)
    assert not sup.post(sup.grow, 1)
    assert sup.call(lambda s: "inline") == "inline"

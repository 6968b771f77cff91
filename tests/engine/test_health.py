"""The health breakers, without processes: restart frequency and start failures."""

from __future__ import annotations

import signal

import pytest

from poolx.engine.health import START_FAILURE_LIMIT, Health, describe_exit
from poolx.exceptions import BrokenPoolError, RestartFreqExceeded


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _died(health: Health, pid: int, exitcode: int | None = 1, *, ready: bool = False,
          expected: bool = False, others_ready: bool = False):
    return health.worker_exited(pid, exitcode, ready=ready, expected=expected,
                                others_ready=others_ready)


def test_describe_exit():
    assert describe_exit(3) == "exitcode 3"
    assert describe_exit(-signal.SIGKILL) == "signal 9 (SIGKILL)"
    assert describe_exit(-200) == "signal 200 (unknown signal)"
    assert describe_exit(None) == "exitcode None"


def test_silent_deaths_before_ready_break_the_pool_naming_the_exit_code():
    health = Health(None, 1.0)
    for pid in range(1, START_FAILURE_LIMIT):
        assert _died(health, pid, 1) is None
    error = _died(health, START_FAILURE_LIMIT, 1)
    assert isinstance(error, BrokenPoolError)
    assert f"{START_FAILURE_LIMIT} workers in a row exited before they were ready" in str(error)
    assert "exitcode 1" in str(error)
    assert error.__cause__ is None


def test_initializer_errors_break_the_pool_with_their_cause():
    health = Health(None, 1.0)
    boom = RuntimeError("initializer failed")
    error = None
    for pid in range(START_FAILURE_LIMIT):
        health.init_failed(pid, boom)
        error = _died(health, pid, 3)
    assert isinstance(error, BrokenPoolError)
    assert str(error) == f"the worker initializer failed {START_FAILURE_LIMIT} times in a row: {boom!r}"
    assert error.__cause__ is boom


def test_the_error_describes_the_last_failure():
    health = Health(None, 1.0, start_failure_limit=2)
    health.init_failed(1, ValueError("x"))
    assert _died(health, 1, 3) is None
    error = _died(health, 2, -11)
    assert "signal 11 (SIGSEGV)" in str(error) and "initializer" not in str(error)
    health = Health(None, 1.0, start_failure_limit=2)
    assert _died(health, 1, -11) is None
    health.init_failed(2, ValueError("x"))
    assert "initializer failed" in str(_died(health, 2, 3))


def test_a_ready_worker_resets_the_count():
    health = Health(None, 1.0)
    for pid in range(START_FAILURE_LIMIT - 1):
        assert _died(health, pid) is None
    health.worker_ready()
    for pid in range(START_FAILURE_LIMIT - 1):
        assert _died(health, 100 + pid) is None
    assert isinstance(_died(health, 200), BrokenPoolError)


def test_no_break_while_another_worker_is_ready():
    health = Health(None, 1.0)
    for pid in range(START_FAILURE_LIMIT + 2):
        assert _died(health, pid, others_ready=True) is None
    assert health.start_failures == START_FAILURE_LIMIT + 2
    assert isinstance(_died(health, 99), BrokenPoolError)  # the last ready one went away


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_kills_from_outside_while_starting_are_not_start_failures(sig):
    """kill -9, the OOM killer or a process-group SIGTERM reaching a worker
    that is still starting says nothing about whether workers can start."""
    health = Health(None, 1.0)
    for pid in range(START_FAILURE_LIMIT * 3):
        assert _died(health, pid, -sig) is None
    assert health.start_failures == 0


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE])
def test_crashes_while_starting_are_start_failures(sig):
    """A worker that crashes by itself while starting (a broken extension
    module imported by the main module) would crash again, forever."""
    health = Health(None, 1.0)
    for pid in range(1, START_FAILURE_LIMIT):
        assert _died(health, pid, -sig) is None
    error = _died(health, START_FAILURE_LIMIT, -sig)
    assert isinstance(error, BrokenPoolError)
    assert signal.Signals(sig).name in str(error)


def test_kills_by_the_supervisor_count_for_nothing():
    health = Health(0, 1.0)
    for pid in range(10):
        health.init_failed(pid, RuntimeError())
        assert _died(health, pid, -9, expected=True) is None
        assert _died(health, 100 + pid, -9, ready=True, expected=True) is None
    assert health.start_failures == 0 and health.restarts == 0


def test_graceful_exits_are_not_restarts():
    health = Health(0, 1.0)
    assert _died(health, 1, 0, ready=True) is None
    assert health.restarts == 0


def test_restart_frequency():
    clock = Clock()
    health = Health(2, 1.0, clock=clock)
    assert _died(health, 1, -9, ready=True) is None
    clock.now += 0.4
    assert _died(health, 2, 1, ready=True) is None
    clock.now += 0.4
    error = _died(health, 3, 1, ready=True)
    assert isinstance(error, RestartFreqExceeded)
    assert str(error) == "3 worker restarts in 1.0 s (max_restarts=2)"
    assert health.restarts == 3


def test_restarts_outside_the_window_are_forgotten():
    clock = Clock()
    health = Health(1, 1.0, clock=clock)
    for pid in range(10):
        assert _died(health, pid, 1, ready=True) is None
        clock.now += 1.5
    assert health.restarts == 10


def test_no_restart_limit():
    health = Health(None, 1.0)
    assert all(_died(health, pid, 1, ready=True) is None for pid in range(50))
    assert health.restarts == 50


def test_with_max_restarts_start_failures_are_restarts():
    """billiard: max_restarts given and an initializer that always fails:
    RestartFreqExceeded, the user's explicit rule."""
    health = Health(2, 60.0)
    for pid in range(1, 3):
        health.init_failed(pid, RuntimeError("init"))
        assert _died(health, pid, 3) is None
    health.init_failed(3, RuntimeError("init"))
    assert isinstance(_died(health, 3, 3), RestartFreqExceeded)

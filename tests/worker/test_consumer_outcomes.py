"""poolx.consumer.outcomes: what each answer of the pool means for the task,
decided by exception type alone (pure functions, no pool needed)."""

from __future__ import annotations

import pytest

from poolx.consumer.outcomes import GiveBack, Store, from_pool_error, from_worker, not_running
from poolx.exceptions import (
    BrokenPoolError,
    MemoryLimitExceeded,
    PoolTerminated,
    RestartFreqExceeded,
    SoftTimeLimitExceeded,
    Terminated,
    TimeLimitExceeded,
    WorkerLostError,
)
from poolx.task import FunctionTask, TaskExpired, TaskFailure

QUEUE = "jobs"


def task(**options) -> FunctionTask:
    return FunctionTask("app.work", (), {}, {"id": "t1", **options})


def failure(text: str, kind: type = TaskFailure) -> Store:
    return Store(kind("app.work", QUEUE, "t1", text))


def test_a_value_is_stored_as_it_is():
    assert from_worker(task(), QUEUE, 42) == Store(42)


def test_a_worker_failure_names_the_consumed_queue():
    raised = TaskFailure("app.work", "default", "t1", "ZeroDivisionError: division by zero")
    outcome = from_worker(task(), QUEUE, raised)
    assert outcome == failure("ZeroDivisionError: division by zero")
    # a failure about another task (a Deferred argument's) is passed on as it is
    other = TaskExpired("app.arg", "default", "a9", "task expired before a result was returned")
    assert from_worker(task(), QUEUE, other).value is other


@pytest.mark.parametrize(
    "options, error, expected",
    [
        ({}, TimeLimitExceeded(0.3),
         failure("TimeLimitExceeded: hard time limit (0.3 s) exceeded; the worker was killed")),
        ({"timeout": 2}, TimeLimitExceeded(2),
         failure("TimeLimitExceeded: hard time limit (2 s) exceeded; the worker was killed")),
        ({}, TimeLimitExceeded(), failure(
            "TimeLimitExceeded: hard time limit (?) exceeded; the worker was killed")),
        ({"soft_timeout": 0.2}, SoftTimeLimitExceeded(),
         failure("SoftTimeLimitExceeded: soft time limit (0.2 s) exceeded")),
        ({}, SoftTimeLimitExceeded("any text"),
         failure("SoftTimeLimitExceeded: soft time limit exceeded")),
        ({}, MemoryLimitExceeded(200 * 2**20, 60 * 2**20, 1234), failure(
            "MemoryLimitExceeded: worker 1234 used 200.0 MiB, over the job's memory limit of 60.0 MiB")),
        ({}, WorkerLostError("worker 1234 exited with signal 9"),
         failure("WorkerLostError: worker 1234 exited with signal 9", TaskExpired)),
        ({}, Terminated(15), failure("Terminated: the task was terminated (signal 15)")),
        ({}, Terminated(), failure("Terminated: the task was terminated")),
        # the type decides, not the text: a plain Terminated saying so is not the pool's
        ({}, Terminated("pool terminated"), failure("Terminated: the task was terminated")),
        ({}, PoolTerminated(True),
         failure("Terminated: the worker pool was stopped while the task ran")),
        # unknown: it may have run, so it must not run again
        ({}, PoolTerminated(None),
         failure("Terminated: the worker pool was stopped while the task ran")),
        ({}, ValueError("result too large"), failure("ValueError: result too large")),
    ],
)
def test_pool_errors_become_failures(options, error, expected):
    assert from_pool_error(task(**options), QUEUE, error) == expected


def test_a_task_the_terminated_pool_never_started_goes_back():
    outcome = from_pool_error(task(), QUEUE, PoolTerminated(False))
    assert outcome == GiveBack("the pool was terminated before the task started")


@pytest.mark.parametrize("error", [BrokenPoolError("every initializer failed"),
                                   RestartFreqExceeded("too many restarts")])
def test_a_broken_pool_gives_the_task_back_and_breaks_the_consumer(error):
    outcome = from_pool_error(task(), QUEUE, error)
    assert isinstance(outcome, GiveBack) and outcome.broken is error
    assert str(error) in outcome.why


def test_a_pool_that_is_not_running_breaks_the_consumer_unless_it_stops():
    running = not_running(ValueError("Pool not running"), stopping=False)
    assert isinstance(running.broken, BrokenPoolError)
    assert "not running" in str(running.broken)
    stopping = not_running(ValueError("Pool not running"), stopping=True)
    assert stopping.broken is None and "not running" in stopping.why

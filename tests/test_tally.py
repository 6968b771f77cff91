"""poolx.tally: the per-task-name counts behind stats()["tasks"] and the metrics."""

from __future__ import annotations

import functools

import pytest

from poolx import tally
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


def work(x):
    return x


class Callable:
    def __call__(self, x):
        return x


def test_task_names():
    assert tally.task_name(work) == "tests.test_tally.work"
    assert tally.task_name(functools.partial(work, 1)) == "tests.test_tally.work"
    assert tally.task_name(Callable()) == "tests.test_tally.Callable"
    assert tally.task_name(len) == "builtins.len"
    assert tally.task_name(lambda: 0) == "tests.test_tally.test_task_names.<locals>.<lambda>"


@pytest.mark.parametrize("error, outcome", [
    (ValueError("x"), "error"),
    (TimeLimitExceeded(1.0), "timeout"),
    (SoftTimeLimitExceeded(), "timeout"),
    (MemoryLimitExceeded(2, 1, 3), "memory"),
    (WorkerLostError("gone"), "lost"),
    (Terminated(9), "terminated"),
    (PoolTerminated(True), "terminated"),
    (PoolTerminated(None), "terminated"),
    (PoolTerminated(False), None),  # never started
    (BrokenPoolError("broken"), None),
    (RestartFreqExceeded("too many"), None),
])
def test_failure_outcomes(error, outcome):
    assert tally.failure_outcome(error) == outcome


def test_raised_outcome():
    assert tally.raised_outcome(SoftTimeLimitExceeded()) == "timeout"
    assert tally.raised_outcome(TimeLimitExceeded(1)) == "error"  # raised by the task itself


def test_counts_and_histogram():
    t = tally.TaskTally()
    t.started("a")
    t.ended("a", None, 0.003, counted=True)
    t.ended("a", "error", 7.0, counted=False)  # ended before anyone saw it run
    t.ended("a", "lost")
    t.ended("b", "timeout", counted=False)
    snap = t.snapshot()
    a = snap["a"]
    assert a["started"] == 2 and a["succeeded"] == 1
    assert a["failed"] == {"error": 1, "timeout": 0, "memory": 0, "lost": 1, "terminated": 0}
    buckets = dict(zip((*tally.DURATION_BUCKETS, float("inf")), a["duration"]["buckets"],
                       strict=True))
    assert buckets[0.005] == 1 and buckets[5.0] == 1 and buckets[10.0] == 2
    assert buckets[float("inf")] == 2 == a["duration"]["count"]
    assert a["duration"]["sum"] == pytest.approx(7.003)
    assert snap["b"]["started"] == 1 and snap["b"]["duration"]["count"] == 0


def test_names_beyond_the_cap_are_counted_as_other():
    t = tally.TaskTally(max_names=2)
    for name in ("a", "b", "c", "d"):
        t.ended(name, None, counted=False)
    t.ended("a", None, counted=False)
    snap = t.snapshot()
    assert set(snap) == {"a", "b", tally.OTHER}
    assert snap[tally.OTHER]["succeeded"] == 2 and snap["a"]["succeeded"] == 2

"""Random mixes of tasks through a process WorkerPool: every task gets
exactly the outcome its kind calls for, whatever ran before it on the same
worker (crashes, kills, time limits, recycling)."""

from __future__ import annotations

import random

import pytest

from poolx import Task, TaskFailure, get_queue
from poolx.core import get_broker
from poolx.pool.process import default_context
from poolx.task import TaskExpired, wait_all
from tests.worker import tasks

KINDS = {
    # kind: (make the task, check its Deferred)
    "ok": (lambda q, i: q.wt.num(i), lambda res, i: res.value == i),
    "raises": (lambda q, i: q.wt.div(i, 0), lambda res, i: _fails(res, TaskFailure, "ZeroDivisionError")),
    "hard": (lambda q, i: Task(q.wt.sleep, timeout=0.05)(30),
             lambda res, i: _fails(res, TaskFailure, "TimeLimitExceeded: hard time limit (0.05 s)")),
    "soft": (lambda q, i: Task(q.wt.soft_sleep, soft_timeout=0.03)(30), lambda res, i: _soft(res)),
    "dies": (lambda q, i: q.wt.suicide(), lambda res, i: _fails(res, TaskExpired, "WorkerLostError")),
    "ignored": (lambda q, i: Task(q.wt.num, ignore_result=True)(i), None),
}


def _fails(res, kind: type, text: str) -> bool:
    try:
        _ = res.value
    except kind as failure:
        return text in failure.error
    return False


def _soft(res) -> bool:
    """The soft limit hit this task: caught by it ("cleaned up"), or — on a
    loaded machine, when 30 ms pass before the task reaches its ``try`` —
    raised before it could catch it.  Both are the limit landing in the right
    task; anything else is wrong."""
    try:
        return res.value == "cleaned up"
    except TaskFailure as failure:
        return "SoftTimeLimitExceeded" in failure.error


def _check(kind: str, res, i: int) -> bool:
    try:
        return KINDS[kind][1](res, i)
    except TaskFailure:
        return False


def _outcome(res) -> str:
    try:
        return f"value {res.value!r}"
    except TaskFailure as failure:
        return f"{type(failure).__name__}: {failure.error}"


def _run_mix(url: str, start_pool, seed: int, count: int, **pool_kw) -> None:
    rng = random.Random(seed)
    start_pool(get_broker(url), tasks.init, **pool_kw)
    q = get_queue(url)
    weights = {"ok": 10, "raises": 3, "hard": 1, "soft": 1, "dies": 1, "ignored": 2}
    plan = rng.choices(list(weights), weights=list(weights.values()), k=count)
    submitted = [(kind, i, KINDS[kind][0](q, i)) for i, kind in enumerate(plan)]
    waited = [(kind, i, res) for kind, i, res in submitted if res is not None]
    assert wait_all([res for _, _, res in waited], 60), [r for _, _, r in waited if not r.wait(0)]
    wrong = [(kind, i, _outcome(res)) for kind, i, res in waited if not _check(kind, res, i)]
    assert not wrong
    final = q.wt.num(-1)  # the pool still works after all that
    assert final.wait(30) and final.value == -1


@pytest.mark.parametrize("seed", [1, 2])
def test_random_mix(url, start_pool, seed):
    _run_mix(url, start_pool, seed, 40, workers=2, max_worker_tasks=7)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(5))
def test_random_mix_soak(url, start_pool, seed):
    # the default start method (forkserver), as in production: fork is faster
    # to start but the parent's logging threads make forked workers risky
    _run_mix(url, start_pool, seed, 1500, workers=3, max_worker_tasks=50, context=default_context())

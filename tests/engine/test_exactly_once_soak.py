"""Soak: thousands of jobs with side effects and random deaths, under every
start method.  From the side-effect log: no job ran twice, every job has
exactly one outcome, and each outcome matches its job.

Deaths come from the jobs themselves (``os._exit``, SIGKILL, a segfault),
from hard time limits that expire just as a job finishes, from memory limits,
and from outside (a thread SIGKILLs random workers).
"""

from __future__ import annotations

import collections
import os
import random
import signal
import threading

import pytest

import poolx
from poolx.exceptions import MemoryLimitExceeded, TimeLimitExceeded, WorkerLostError
from tests.engine import chaos

pytestmark = pytest.mark.soak

FATES = ["ok"] * 80 + ["raise"] * 6 + ["exit"] * 3 + ["sigkill"] * 3 + ["segfault"] * 2 + \
    ["sleep"] * 5 + ["memory"] * 1
LIMIT = 0.05  # the hard time limit of "sleep" jobs, which sleep 30-70 ms


def _killer(pool, stop, rng):
    """SIGKILL a random worker every ~50 ms."""
    while not stop.wait(rng.uniform(0.02, 0.08)):
        workers = pool.stats()["workers"]
        if workers:
            try:
                os.kill(rng.choice(workers)["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.timeout(600)
def test_no_job_runs_twice_under_random_deaths(ctx, tmp_path):
    n = 3000 if ctx.get_start_method() != "spawn" else 1200
    rng = random.Random(n)
    log = str(tmp_path / "runs.log")
    fates = [rng.choice(FATES) for _ in range(n)]
    with poolx.Pool(2, context=ctx, memory_poll_interval=0.01) as pool:
        stop = threading.Event()
        killer = threading.Thread(target=_killer, args=(pool, stop, rng), daemon=True)
        killer.start()
        results = []
        for i, fate in enumerate(fates):
            kwds = {}
            if fate == "sleep":
                kwds["timeout"] = LIMIT
            if fate == "memory":
                kwds["memory_limit"] = "100MB"
            results.append(pool.apply_async(
                chaos.fated_job, (log, i, fate, rng.uniform(0.03, 0.07)), **kwds))
        outcomes = []
        for result in results:
            try:
                outcomes.append(("value", result.get(timeout=120)))
            except BaseException as exc:  # noqa: BLE001 - classified below
                outcomes.append(("error", exc))
        stop.set()
        killer.join(10)

    runs = collections.Counter(int(line) for line in open(log))
    assert {i: c for i, c in runs.items() if c > 1} == {}, "jobs ran twice"
    lost = 0
    for i, (fate, (kind, value)) in enumerate(zip(fates, outcomes, strict=True)):
        if kind == "error" and isinstance(value, WorkerLostError):
            # killed from outside before or after its side effect, or died by itself
            lost += 1
            continue
        assert runs[i] == 1, (i, fate, kind, value)  # every other outcome means it ran
        if fate == "ok":
            assert (kind, value) == ("value", i)
        elif fate == "raise":
            assert kind == "error" and isinstance(value, ValueError) and value.args == (i,)
        elif fate == "sleep":
            assert (kind, value) == ("value", i) or isinstance(value, TimeLimitExceeded)
        elif fate == "memory":
            assert isinstance(value, MemoryLimitExceeded), value
        else:
            raise AssertionError((i, fate, kind, value))  # exit/kill/segfault must be lost
    assert lost >= sum(f in ("exit", "sigkill", "segfault") for f in fates)

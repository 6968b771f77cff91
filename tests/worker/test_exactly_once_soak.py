"""Soak: the exactly-once rule through the task queue (issue 17).

* ``memory://`` through the process WorkerPool: tasks whose worker process
  dies are reported (``TaskExpired``), never run again; every other task runs
  exactly once — memory:// has no leases and no redeliveries.
* Redis with whole consumers killed (``kill -9``) again and again: a task runs
  twice only when the consumer of its earlier run died *before* storing the
  result, and never after a result was stored.

The side-effect log, not the results, is the judge.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from poolx import TaskFailure, get_broker, get_queue
from poolx.core import batch
from poolx.task import TaskExpired, wait_all
from tests.worker import soak_tasks

pytestmark = pytest.mark.soak

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_memory_queue_runs_every_task_at_most_once_under_worker_deaths(url, start_pool, tmp_path):
    n = 1500
    log = str(tmp_path / "runs.log")
    rng = random.Random(n)
    fates = [rng.choice(["ok"] * 17 + ["raise", "exit"]) for _ in range(n)]
    start_pool(get_broker(url), soak_tasks.init)
    q = get_queue(url)
    results = [q.soak.fated(log, i, fate) for i, fate in enumerate(fates)]
    assert wait_all(results, timeout=240)
    runs = soak_tasks.read_runs(log)
    assert {i: pids for i, pids in runs.items() if len(pids) > 1} == {}, "tasks ran twice"
    for i, (fate, result) in enumerate(zip(fates, results, strict=True)):
        assert len(runs.get(i, [])) == 1, (i, fate)
        if fate == "ok":
            assert result.value == (i, runs[i][0])
        else:
            with pytest.raises(TaskExpired if fate == "exit" else TaskFailure):
                result.value  # noqa: B018 - raises


def _consumer(url: str) -> subprocess.Popen[str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.worker.soak_tasks", url],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": path},
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.redis
@pytest.mark.timeout(300)
def test_redis_reruns_only_tasks_whose_consumer_died_before_storing(redis_server, tmp_path):
    from tests.taskqueue.conftest import delete_prefix, isolated_url

    url = isolated_url(redis_server.url)
    n = 1500
    log = str(tmp_path / "runs.log")
    q = get_queue(url, heartrate=0.1)  # lease: 2 * 0.1 + 5 s
    with batch(q):
        results = [q.soak.fated(log, i, "slow") for i in range(n)]
    consumers = [_consumer(url), _consumer(url)]
    killed: set[int] = set()
    done = threading.Event()

    def killer() -> None:
        rng = random.Random(7)
        while not done.wait(rng.uniform(0.2, 0.5)) and len(killed) < 8:
            victim = consumers.pop(rng.randrange(len(consumers)))
            victim.send_signal(signal.SIGKILL)
            victim.wait(30)
            killed.add(victim.pid)
            consumers.append(_consumer(url))

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        assert wait_all(results, timeout=240)
    finally:
        done.set()
        thread.join(60)
        for proc in consumers:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        get_broker(url).discard_pending_tasks()
        delete_prefix(url)
    assert killed, "the killer never ran"
    runs = soak_tasks.read_runs(log)
    assert any(len(pids) > 1 for pids in runs.values()), "no kill hit a running task"
    for i, result in enumerate(results):
        pids = runs[i]
        # the stored result is the last run's: no run after a result was stored
        assert result.value == (i, pids[-1]), (i, pids, result.value)
        # every earlier run was in a consumer that died before storing its result
        assert set(pids[:-1]) <= killed, (i, pids, killed)

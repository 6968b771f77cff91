"""poolx.pool.process.WorkerPool: WorQ's contract, and poolx's limits on top."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from poolx import Task, TaskFailure, get_broker, get_queue
from poolx.pool.process import Error, WorkerPool, start_pools
from poolx.task import TaskExpired
from tests.conftest import wait_until
from tests.worker import tasks
from tests.worker.conftest import CONTEXT

WAIT = 20


def test_results_come_back_through_the_parent_broker(url, start_pool):
    # memory:// lives in this process only: results must be stored here
    start_pool(get_broker(url), tasks.init)
    q = get_queue(url)
    total = q.wt.add([q.wt.num(i) for i in range(10)])
    assert total.wait(WAIT)
    assert total.value == 45


def test_tasks_run_in_worker_processes(url, start_pool):
    start_pool(get_broker(url), tasks.init)
    res = get_queue(url).wt.getpid()
    assert res.wait(WAIT)
    assert res.value != os.getpid()


def test_exceptions_become_task_failures(url, start_pool):
    start_pool(get_broker(url), tasks.init)
    res = get_queue(url).wt.div(1, 0)
    assert res.wait(WAIT)
    with pytest.raises(TaskFailure) as info:
        _ = res.value
    assert info.value.error == "ZeroDivisionError: division by zero"
    assert str(info.value) == f"wt.div [default:{res.id}] ZeroDivisionError: division by zero"


def test_unknown_task(url, start_pool):
    start_pool(get_broker(url), tasks.init)
    res = get_queue(url).wt.nope()
    assert res.wait(WAIT)
    with pytest.raises(TaskFailure, match=r"no such task$"):
        _ = res.value


def test_failure_names_the_consumed_queue(url, start_pool):
    # the worker's broker (from init) serves 'default'; the pool consumes 'other'
    start_pool(get_broker(url, "other"), tasks.init)
    res = get_queue(url, "other").wt.div(1, 0)
    assert res.wait(WAIT)
    assert res.status == "failed"
    with pytest.raises(TaskFailure) as info:
        _ = res.value
    assert info.value.queue == "other"


def test_unpicklable_result_fails_clearly(url, start_pool):
    start_pool(get_broker(url), tasks.init, workers=1)
    res = get_queue(url).wt.unpicklable_result()
    assert res.wait(WAIT)
    with pytest.raises(TaskFailure, match="lock"):
        _ = res.value
    assert get_queue(url).wt.num(3).wait(WAIT)  # the pool goes on


def test_start_twice(url, start_pool):
    pool = start_pool(get_broker(url), tasks.init, workers=1)
    with pytest.raises(Error):
        pool.start(handle_sigterm=False)


def test_stop_returns_false_when_not_running(url):
    pool = WorkerPool(get_broker(url), tasks.init, workers=1, context=CONTEXT)
    assert pool.stop() is False


def test_workers_default_to_cpu_count(url):
    assert WorkerPool(get_broker(url), tasks.init).workers == (os.cpu_count() or 1)


def test_name_defaults_to_queue_name(url):
    assert WorkerPool(get_broker(url), tasks.init).name is None
    pool = WorkerPool(get_broker(url, "q2"), tasks.init)
    assert pool.name == "q2"
    assert str(pool) == f"WorkerPool-{os.getpid()}-q2"


@pytest.mark.parametrize(
    "kw, error",
    [
        ({"workers": 0}, ValueError),
        ({"max_worker_tasks": 0}, ValueError),
        ({"processes": 2}, TypeError),
        ({"maxtasksperchild": 2}, TypeError),
        ({"no_such_option": 1}, TypeError),
    ],
)
def test_invalid_arguments(url, kw, error):
    with pytest.raises(error):
        WorkerPool(get_broker(url), tasks.init, **kw)


def test_init_arguments_are_read_at_start(url, start_pool):
    broker = get_broker(url)
    pool = WorkerPool(broker, tasks.init, workers=1, context=CONTEXT)
    assert pool.init_args == (url,)
    pool.init_func = tasks.init_with_kwargs
    pool.init_args += ("late",)
    pool.init_kwargs["extra"] = 1
    pool.start(timeout=0.2, handle_sigterm=False)
    try:
        res = get_queue(url).init_args()
        assert res.wait(WAIT)
        assert res.value == {"url": url, "tag": "late", "extra": 1}
    finally:
        pool.stop()


def test_max_worker_tasks_keeps_fifo_order(url, start_pool):
    start_pool(get_broker(url), tasks.init_counting, workers=1, max_worker_tasks=3)
    q = get_queue(url)
    res = q.wt.echo(*[q.count() for _ in range(4)])
    assert res.wait(WAIT), repr(res)
    results = res.value[0]
    assert [r[1] for r in results] == [1, 2, 3, 1]
    assert len({r[0] for r in results}) == 2


def test_killed_worker_fails_its_task_promptly_and_is_replaced(url, start_pool):
    start_pool(get_broker(url), tasks.init, workers=1)
    q = get_queue(url)
    first = q.wt.getpid()
    assert first.wait(WAIT)
    # heartrate is WorQ's bound; poolx sees the death at once
    res = Task(q.wt.suicide, heartrate=30)()
    assert res.wait(5), repr(res)
    with pytest.raises(TaskExpired, match="WorkerLostError: .*signal 9"):
        _ = res.value
    again = q.wt.getpid()
    assert again.wait(WAIT)
    assert again.value != first.value


def test_kill_9_of_a_worker_mid_task(url, start_pool, tmp_path):
    start_pool(get_broker(url), tasks.init, workers=2)
    q = get_queue(url)
    res = q.wt.touch_and_wait(str(tmp_path), "victim")
    started = tmp_path / "victim.started"
    wait_until(started.exists, WAIT)
    os.kill(int(started.read_text()), signal.SIGKILL)
    assert res.wait(5), repr(res)
    with pytest.raises(TaskExpired, match="signal 9"):
        _ = res.value
    assert q.wt.num(7).wait(WAIT)


def test_pool_timeout_options_apply_to_every_task(url, start_pool):
    start_pool(get_broker(url), tasks.init, workers=1, timeout=0.3)
    res = get_queue(url).wt.sleep(30)
    assert res.wait(WAIT)
    with pytest.raises(TaskFailure, match=r"TimeLimitExceeded: hard time limit \(0.3 s\)"):
        _ = res.value


def test_task_options_override_pool_limits(url, start_pool):
    start_pool(get_broker(url), tasks.init, workers=1, timeout=0.3)
    res = Task(get_queue(url).wt.sleep, timeout=20)(0.5)
    assert res.wait(WAIT)
    assert res.value == 0.5


def test_soft_timeout_is_raised_inside_the_task(url, start_pool):
    start_pool(get_broker(url), tasks.init, workers=1)
    q = get_queue(url)
    caught = Task(q.wt.soft_sleep, soft_timeout=0.2)(30)
    uncaught = Task(q.wt.sleep, soft_timeout=0.2)(30)
    assert caught.wait(WAIT) and uncaught.wait(WAIT)
    assert caught.value == "cleaned up"
    with pytest.raises(TaskFailure, match=r"SoftTimeLimitExceeded: soft time limit \(0.2 s\) exceeded"):
        _ = uncaught.value


def test_memory_limit(url, start_pool):
    start_pool(get_broker(url), tasks.init, workers=1, memory_poll_interval=0.02)
    res = Task(get_queue(url).wt.hog, memory_limit="60MB")(200, 5)
    assert res.wait(WAIT)
    with pytest.raises(TaskFailure, match="MemoryLimitExceeded: worker .* over the job's memory limit"):
        _ = res.value


def test_broken_init_stops_consuming_and_keeps_tasks(url, start_pool):
    broker = get_broker(url)
    q = get_queue(url)
    res = q.wt.num(1)
    pool = start_pool(broker, tasks.init_fails, workers=1)
    wait_until(lambda: pool.broken is not None, WAIT)
    assert "initializer failed" in str(pool.broken)
    pool.stop()
    assert res.status == "enqueued"  # never ran: back in the queue, not failed
    assert len(broker) == 1
    start_pool(broker, tasks.init, workers=1)
    assert res.wait(WAIT) and res.value == 1


def test_init_must_return_a_broker(url, start_pool):
    pool = start_pool(get_broker(url), tasks.init_not_a_broker, workers=1)
    get_queue(url).wt.num(1)
    wait_until(lambda: pool.broken is not None, WAIT)
    assert "must return a broker" in str(pool.broken.__cause__)


def test_graceful_stop_lets_running_tasks_finish(url, start_pool, tmp_path):
    pool = start_pool(get_broker(url), tasks.init, workers=1)
    res = get_queue(url).wt.touch_and_wait(str(tmp_path), "t")
    wait_until((tmp_path / "t.started").exists, WAIT)
    pool.stop(join=False)
    assert not pool.join(0.2)  # the task still runs
    (tmp_path / "t.unlock").touch()
    assert pool.join(WAIT)
    assert res.value == "t done"


def test_terminate_fails_running_and_requeues_prefetched(url, tmp_path):
    broker = get_broker(url)
    q = get_queue(url)
    pool = WorkerPool(broker, tasks.init, workers=1, context=CONTEXT, prefetch=3)
    pool.start(timeout=0.2, handle_sigterm=False)
    running = q.wt.touch_and_wait(str(tmp_path), "r")
    wait_until((tmp_path / "r.started").exists, WAIT)
    waiting = [q.wt.num(i) for i in range(3)]
    wait_until(lambda: pool.consumer.in_flight == 4, WAIT)
    pool.terminate()
    with pytest.raises(TaskFailure, match="Terminated: the worker pool was stopped while the task ran"):
        _ = running.value
    assert [r.status for r in waiting] == ["enqueued"] * 3
    assert pool.consumer.stats["requeued"] == 3
    pool2 = WorkerPool(broker, tasks.init, workers=1, context=CONTEXT)
    pool2.start(timeout=0.2, handle_sigterm=False)
    try:
        assert all(r.wait(WAIT) for r in waiting)
        assert [r.value for r in waiting] == [0, 1, 2]
    finally:
        pool2.stop()


def test_context_manager_and_restart(url):
    broker = get_broker(url)
    pool = WorkerPool(broker, tasks.init, workers=1, context=CONTEXT)
    for _ in range(2):
        with pool:
            assert pool.running
            res = get_queue(url).wt.num(5)
            assert res.wait(WAIT) and res.value == 5
        assert not pool.running


def test_lifecycle_callbacks_are_chained(url, start_pool):
    ups, exits = [], []
    pool = start_pool(get_broker(url), tasks.init, workers=1,
                      on_process_up=lambda p: ups.append(p.pid),
                      on_process_exit=lambda pid, code: exits.append((pid, code)))
    wait_until(lambda: ups, WAIT)
    pool.stop()
    wait_until(lambda: exits, WAIT)
    assert exits[0][0] == ups[0]


def test_start_pools_needs_pools():
    with pytest.raises(ValueError):
        start_pools()


def test_start_pools_raises_when_a_pool_breaks(url):
    pool = WorkerPool(get_broker(url), tasks.init_fails, workers=1, context=CONTEXT)
    with pytest.raises(Error, match="is broken"):
        start_pools(pool, timeout=0.2)
    assert not pool.running


def test_the_pool_watch_keeps_workers_of_a_live_pool(url, start_pool):
    # init_poll_fast checks every 0.1 s that the pool's process lives: under
    # forkserver that process is not the workers' parent, and they must stay
    start_pool(get_broker(url), tasks.init_poll_fast, workers=1)
    q = get_queue(url)
    first = q.wt.getpid()
    assert first.wait(WAIT)
    slow = q.wt.sleep(0.5)  # runs through five checks
    assert slow.wait(WAIT) and slow.value == 0.5
    again = q.wt.getpid()
    assert again.wait(WAIT) and again.value == first.value


def test_workers_import_only_what_they_run(url, start_pool):
    start_pool(get_broker(url), tasks.init, workers=1)
    res = get_queue(url).wt.modules()
    assert res.wait(WAIT)
    loaded = set(res.value)
    assert {"poolx.consumer.inworker", "poolx.engine.worker"} <= loaded
    pool_side = {"poolx.consumer.adapter", "poolx.consumer.intake", "poolx.engine.api",
                 "poolx.engine.supervisor", "cloudpickle"}
    assert not loaded & pool_side


_SKIP_TRACKER = """
import multiprocessing, sys
import psutil
from poolx.pool.process import skip_resource_tracker

def children():
    return [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)]

def wait_for(ready, go):
    ready.set()
    go.wait(30)

if __name__ == "__main__":
    if sys.argv[1] == "skip":
        assert skip_resource_tracker() is True
    # A plain Process, not the standard library's Pool (whose terminate()
    # at the end of a with-block hangs now and then under forkserver).
    ctx = multiprocessing.get_context("forkserver")
    ready, go = ctx.Event(), ctx.Event()
    child = ctx.Process(target=wait_for, args=(ready, go))
    child.start()
    assert ready.wait(30)
    running = children()
    go.set()
    child.join(30)
    assert child.exitcode == 0
    print(sum("resource_tracker import main" in c for c in running), len(running))
    print(skip_resource_tracker())
"""


@pytest.mark.parametrize("skip", [True, False])
def test_skip_resource_tracker(tmp_path, skip):
    """Without it a forkserver pool starts a resource tracker; with it, none
    runs; once a tracker runs, it does nothing (False)."""
    script = tmp_path / "skip_tracker.py"
    script.write_text(_SKIP_TRACKER)
    out = subprocess.run([sys.executable, str(script), "skip" if skip else "keep"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    counts, again = out.stdout.split("\n")[:2]
    trackers, processes = map(int, counts.split())
    assert (trackers, processes) == ((0, 2) if skip else (1, 3)), out.stdout  # forkserver + worker (+ tracker)
    assert again == "False"


_FIRST_SIGINT = """
import multiprocessing, signal, sys

def first_handler():
    sys.exit(0 if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else 1)

if __name__ == "__main__":
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["poolx.pool.ignore_sigterm"])
    child = ctx.Process(target=first_handler)
    child.start()
    child.join(30)
    print(child.exitcode)
"""


def test_a_poolx_worker_forkserver_starts_its_workers_ignoring_sigint(tmp_path):
    """CTRL+C while a ``poolx worker`` worker was still starting (before its
    initializer ignored SIGINT) killed it with KeyboardInterrupt: the
    forkserver hands its own handlers to each child, so the preload module
    ignores SIGINT there too.  Checked by a plain forkserver child, which
    sets no handler of its own."""
    script = tmp_path / "first_sigint.py"
    script.write_text(_FIRST_SIGINT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0", out.stdout

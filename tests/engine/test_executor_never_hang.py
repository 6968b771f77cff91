"""The pool's never-hang tests, repeated for the executor.

Where the standard library's executor breaks for good (and hangs, in older
versions), each of these fails exactly one future — with the error the
standard library would give that future, or a ``BrokenProcessPool`` — and
the executor goes on.  One start method (fork) is enough here: the core
behaviour runs under all three in test_executor.py.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures.process import BrokenProcessPool

import psutil
import pytest

import poolx
from poolx.exceptions import PoolTerminated, WorkerLostError
from tests.conftest import wait_until
from tests.engine import executor_tasks as tasks


@pytest.fixture
def executor(fork_ctx):
    ex = poolx.ProcessPoolExecutor(2, mp_context=fork_ctx)
    yield ex
    ex.shutdown(kill_workers=True)


def _still_works(executor):
    assert executor.submit(tasks.mul, 6, 7).result(timeout=60) == 42


def test_unpicklable_argument_fails_its_future(executor):
    future = executor.submit(id, tasks.ErrorAtPickle())
    with pytest.raises(pickle.PicklingError, match="error in pickle"):
        future.result(timeout=60)
    with pytest.raises(TypeError, match="cannot pickle"):
        executor.submit(id, tasks.return_lock()).result(timeout=60)
    _still_works(executor)


def test_unpicklable_result_fails_with_the_pickling_error(executor):
    with pytest.raises(TypeError, match="cannot pickle '_thread.lock' object"):
        executor.submit(tasks.return_lock).result(timeout=60)
    _still_works(executor)


def test_argument_that_fails_to_unpickle_in_the_worker(executor):
    with pytest.raises(BrokenProcessPool, match="could not be unpickled in the worker") as info:
        executor.submit(id, tasks.ErrorAtUnpickle()).result(timeout=60)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    _still_works(executor)


def test_argument_whose_unpickling_kills_the_worker(executor):
    with pytest.raises(WorkerLostError):
        executor.submit(id, tasks.ExitAtUnpickle()).result(timeout=60)
    _still_works(executor)


def test_result_that_fails_to_unpickle_in_the_parent(executor):
    with pytest.raises(BrokenProcessPool, match="could not be unpickled in the parent") as info:
        executor.submit(tasks.return_error_at_unpickle).result(timeout=60)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    _still_works(executor)


def test_exception_that_cannot_be_rebuilt(executor):
    with pytest.raises(BrokenProcessPool, match="could not be unpickled in the parent") as info:
        executor.submit(tasks.raise_needs_two_args).result(timeout=60)
    assert isinstance(info.value.__cause__, TypeError)
    _still_works(executor)


def test_crash_while_sending_big_data(executor):
    data = "a" * (1 << 20)
    with pytest.raises(WorkerLostError):
        list(executor.map(tasks.die_with_data, [data] * 10))
    _still_works(executor)


def test_idle_worker_killed_is_replaced(executor):
    executor.submit(tasks.getpid).result(timeout=60)
    pids = {w["pid"] for w in wait_until(lambda: executor.stats()["workers"])}
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert executor.submit(tasks.getpid).result(timeout=60) not in pids


def test_kill_workers_while_busy(executor, tmp_path):
    log = str(tmp_path / "runs")
    running = [executor.submit(tasks.sleep, 30) for _ in range(2)]
    pending = [executor.submit(tasks.log_run, log, i) for i in range(20)]
    wait_until(lambda: all(f.running() for f in running))
    wait_until(lambda: sum(w["job"] is not None for w in executor.stats()["workers"]) == 2)
    started = time.monotonic()
    executor.shutdown(wait=True, kill_workers=True)
    assert time.monotonic() - started < 5
    for future in running:
        with pytest.raises(PoolTerminated):
            future.result(timeout=0)
    assert all(f.done() for f in pending)
    assert sum(f.cancelled() for f in pending) > 10
    for future in pending:  # the few already handed to the pool end without running
        if not future.cancelled():
            assert isinstance(future.exception(), PoolTerminated)
            assert future.exception().started is False
    assert tasks.runs(log) == []


def test_shutdown_deadlock_when_a_worker_dies_after_shutdown(executor):
    future = executor.submit(tasks.die, 3)
    executor.shutdown(wait=True)
    with pytest.raises(BrokenProcessPool):
        future.result(timeout=0)


def _script(body: str) -> subprocess.CompletedProcess:
    code = textwrap.dedent(body)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_interpreter_exit_with_an_executor_left_open(method):
    """As the standard library: submitted calls finish, then a clean exit."""
    out = _script(f"""
        import multiprocessing, poolx
        from tests.engine.executor_tasks import sleep_and_print
        if __name__ == "__main__":
            ex = poolx.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context({method!r}))
            ex.submit(sleep_and_print, 0.5, "apple")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert out.stdout.strip() == "apple"


def test_interpreter_exit_after_shutdown_without_wait():
    out = _script("""
        import poolx
        from tests.engine.executor_tasks import sleep_and_print
        ex = poolx.ProcessPoolExecutor(3)
        ex.submit(sleep_and_print, 0.5, "apple")
        ex.shutdown(wait=False)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert out.stdout.strip() == "apple"


def test_submit_during_interpreter_shutdown():
    out = _script("""
        import atexit

        @atexit.register
        def run_last():
            try:
                ex.submit(id, None)
            except RuntimeError as exc:
                print("runtime-error:", exc)

        import poolx
        ex = poolx.ProcessPoolExecutor(2)
        ex.submit(id, 42).result()
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("runtime-error: cannot schedule new futures after")


def test_parent_killed_workers_exit():
    code = textwrap.dedent("""
        import sys, poolx
        from tests.engine.executor_tasks import getpid, sleep
        ex = poolx.ProcessPoolExecutor(2)
        pids = {ex.submit(getpid).result() for _ in range(20)}
        ex.submit(sleep, 60)
        print(" ".join(map(str, sorted(p["pid"] for p in ex.stats()["workers"]))), flush=True)
        sys.stdin.read()
    """)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2
        proc.kill()
        proc.wait(30)

        def gone():
            return not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                           for p in pids)

        wait_until(gone, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_garbage_collected_executor_finishes_its_calls(fork_ctx):
    import gc

    ex = poolx.ProcessPoolExecutor(2, mp_context=fork_ctx)
    results = ex.map(abs, range(-5, 5))
    futures = [ex.submit(tasks.sleep, 0.1) for _ in range(6)]
    del ex
    gc.collect()
    assert list(results) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    assert [f.result(timeout=60) for f in futures] == [0.1] * 6


def test_no_stale_references(executor):
    import gc
    import threading
    import weakref

    obj = tasks.MyObject()
    collected = threading.Event()
    ref = weakref.ref(obj, lambda _: collected.set())
    executor.submit(obj.method).result(timeout=60)
    del obj
    gc.collect()
    assert collected.wait(10), ref

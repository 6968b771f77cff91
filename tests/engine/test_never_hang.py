"""The reason poolx exists: no failure of a worker ever hangs the caller."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import poolx
from poolx.exceptions import BrokenPoolError, WorkerLostError
from poolx.pool import MaybeEncodingError
from tests.conftest import wait_until
from tests.engine import helpers


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)
            if p.status() != psutil.STATUS_ZOMBIE}


def test_worker_killed_mid_job_fails_only_that_job(pool):
    slow = pool.apply_async(helpers.sleep, (30,))
    wait_until(lambda: slow.worker_pids())
    pid = slow.worker_pids()[0]
    wait_until(lambda: pool.stats()["workers"] and any(
        w["pid"] == pid and w["job"] is not None for w in pool.stats()["workers"]))
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerLostError, match=r"signal 9 \(SIGKILL\)"):
        slow.get(timeout=10)
    results = [pool.apply_async(helpers.square, (i,)) for i in range(50)]
    assert [r.get(timeout=30) for r in results] == [i * i for i in range(50)]


def test_worker_exit_mid_job_names_the_exit_code(pool):
    with pytest.raises(WorkerLostError, match="exitcode 5"):
        pool.apply(helpers.exit_now, (5,))
    assert pool.map(helpers.square, range(50)) == [i * i for i in range(50)]


def test_idle_worker_killed_is_replaced(pool):
    pids = {w["pid"] for w in wait_until(lambda: pool.stats()["workers"])}
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert pool.apply(helpers.square, (6,), timeout=30) == 36
    wait_until(lambda: len(pool.stats()["workers"]) == 2)
    assert not pids & {w["pid"] for w in pool.stats()["workers"]}


def test_worker_killed_while_sending_a_large_result(ctx):
    # Through the pipe (shared memory off); test_payload kills one mid-segment.
    pool = poolx.Pool(2, context=ctx, shm_threshold=None)
    try:
        with pytest.raises(WorkerLostError):
            pool.apply(helpers.big_result_then_die, (50 * 2**20,))
        assert pool.apply(helpers.square, (3,)) == 9
    finally:
        started = time.monotonic()
        pool.terminate()
        assert time.monotonic() - started < 5


def test_worker_dies_while_unpickling_its_arguments(pool):
    with pytest.raises(WorkerLostError):
        pool.apply(helpers.identity, (helpers.DiesOnUnpickle(),))
    assert pool.apply(helpers.square, (2,)) == 4


def test_arguments_that_fail_to_unpickle_in_the_worker(pool):
    with pytest.raises(RuntimeError, match="cannot rebuild this argument"):
        pool.apply(helpers.identity, (helpers.FailsOnUnpickle(),))
    assert pool.apply(helpers.square, (2,)) == 4


def test_result_that_fails_to_unpickle_in_the_parent(pool):
    with pytest.raises(MaybeEncodingError, match="could not be unpickled"):
        pool.apply(helpers.return_fails_in_parent)
    assert pool.apply(helpers.square, (2,)) == 4


def test_exception_that_cannot_be_rebuilt(pool):
    with pytest.raises(MaybeEncodingError, match="BadException"):
        pool.apply(helpers.raise_bad_exception)
    assert pool.apply(helpers.square, (2,)) == 4


def test_unpicklable_arguments_fail_the_call_not_the_pool(pool):
    import threading

    result = pool.apply_async(helpers.identity, (threading.Lock(),))
    with pytest.raises(TypeError, match="pickle"):
        result.get(timeout=5)
    with pytest.raises(TypeError, match="pickle"):
        pool.map(helpers.identity, [1, threading.Lock()])
    iterator = pool.imap(helpers.identity, [1, threading.Lock(), 3])
    assert next(iterator) == 1
    with pytest.raises(TypeError):
        next(iterator)
    assert next(iterator) == 3
    assert pool.apply(helpers.square, (2,)) == 4


def test_callbacks_that_raise_are_logged_and_the_pool_goes_on(pool, caplog):
    def bad_callback(value):
        raise RuntimeError("callback broke")

    with caplog.at_level(logging.ERROR, logger="poolx"):
        first = pool.apply_async(helpers.square, (2,), callback=bad_callback)
        second = pool.apply_async(helpers.raise_value_error, error_callback=bad_callback)
        assert first.get(timeout=10) == 4
        second.wait(10)
        assert second.ready()
        assert pool.map(helpers.square, [1, 2, 3]) == [1, 4, 9]
    assert sum("callback broke" in r.getMessage() or (r.exc_info and "callback broke" in str(r.exc_info[1]))
               for r in caplog.records) == 2


def test_initializer_that_always_raises_breaks_the_pool(ctx):
    pool = poolx.Pool(2, initializer=helpers.failing_initializer, context=ctx)
    try:
        # several jobs: some wait in the queue, some in the pipes of booting
        # workers; every one of them must fail, none may wait forever
        results = [pool.apply_async(helpers.square, (i,)) for i in range(10)]
        for result in results:
            with pytest.raises(BrokenPoolError, match="initializer failed") as info:
                result.get(timeout=60)
        assert "RuntimeError" in str(info.value)
        assert not pool.did_start_ok()
        with pytest.raises(BrokenPoolError):
            pool.apply(helpers.square, (2,))
    finally:
        started = time.monotonic()
        pool.terminate()
        pool.join()
        assert time.monotonic() - started < 5


def test_workers_that_die_before_ready_without_a_word_break_the_pool(ctx):
    """An initializer that exits the process sends no error: the deaths still
    count, and the pool breaks with an error naming the exit code."""
    pool = poolx.Pool(2, initializer=helpers.exit_now, initargs=(7,), context=ctx)
    try:
        results = [pool.apply_async(helpers.square, (i,)) for i in range(5)]
        for result in results:
            with pytest.raises(BrokenPoolError, match="before they were ready.*exitcode 7"):
                result.get(timeout=60)
        assert not pool.did_start_ok()
        assert pool.stats()["workers_started"] >= 3
    finally:
        pool.terminate()
        pool.join()


def test_spawn_pool_whose_main_module_cannot_be_imported_breaks(tmp_path):
    """Under spawn, a program read from stdin has a main 'file' (<stdin>) the
    workers cannot import: they die before READY.  This used to respawn
    workers forever; now the caller gets a BrokenPoolError."""
    script = textwrap.dedent(
        """
        import multiprocessing
        import poolx
        pool = poolx.Pool(1, context=multiprocessing.get_context("spawn"))
        try:
            pool.apply(abs, (-3,))
        except Exception as exc:
            print(type(exc).__name__, exc, flush=True)
        pool.terminate()
        pool.join()
        """
    )
    out = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("BrokenPoolError 3 workers in a row exited before they were ready"), (
        out.stdout, out.stderr[-2000:])
    assert "exitcode 1" in out.stdout
    assert "<stdin>" in out.stderr  # what the workers died of


@pytest.mark.parametrize("state", ["idle", "busy", "stuck"])
def test_terminate_is_prompt_from_every_state(ctx, state):
    pool = poolx.Pool(2, context=ctx)
    pool.apply(helpers.square, (1,))
    pids = {w["pid"] for w in pool.stats()["workers"]}
    pending = []
    if state == "busy":
        pending = [pool.apply_async(helpers.sleep, (0.05,)) for _ in range(20)]
    elif state == "stuck":  # in a C call, and deaf to SIGTERM
        pending = [pool.apply_async(helpers.sleep_ignoring_sigterm, (1000,)) for _ in range(2)]
        wait_until(lambda: all(w["job"] for w in pool.stats()["workers"]) or print(pool.stats()),
                   timeout=30)
    started = time.monotonic()
    pool.terminate()
    pool.join()
    assert time.monotonic() - started < 5
    assert not pids & _children()
    for result in pending:  # nothing left waiting forever
        assert result.ready()


def test_close_join_is_bounded_and_leaves_no_children(ctx):
    pool = poolx.Pool(2, context=ctx)
    results = [pool.apply_async(helpers.sleep, (0.01,)) for _ in range(10)]
    pids = {w["pid"] for w in wait_until(lambda: pool.stats()["workers"])}
    pool.close()
    assert pool.join(timeout=30)
    assert all(r.successful() for r in results)
    assert not pids & _children()


def test_parent_killed_workers_exit_by_themselves(tmp_path):
    script = textwrap.dedent(
        """
        import sys, time
        import poolx
        from tests.engine import helpers
        pool = poolx.Pool(2)
        pool.apply(helpers.square, (1,))
        results = [pool.apply_async(helpers.sleep, (1000,)) for _ in range(3)]
        pids = [w["pid"] for w in pool.stats()["workers"]]
        print(" ".join(map(str, pids)), flush=True)
        sys.stdin.read()
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=root)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    wait_until(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                               for p in pids), timeout=5)
    proc.stdin.close()
    proc.stdout.close()


def test_pool_follows_the_programs_start_method():
    script = textwrap.dedent(
        """
        import multiprocessing, os
        import poolx
        from tests.engine import helpers
        if __name__ == "__main__":
            multiprocessing.set_start_method("forkserver")
            with poolx.Pool(1) as pool:
                print(pool.apply(helpers.getppid) != os.getpid())
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root,
                         timeout=60)
    assert out.stdout.strip() == "True", out.stderr


def test_fork_while_another_thread_imports(fork_ctx):
    """A worker forked while another thread holds an import lock must not
    deadlock when it imports the same module."""
    import threading

    helpers.IMPORT_GATE_PID = os.getpid()
    importer = threading.Thread(target=helpers.import_slow_module)
    importer.start()
    try:
        assert helpers.IMPORT_STARTED.wait(10)
        with poolx.Pool(1, context=fork_ctx) as pool:
            assert pool.apply_async(helpers.import_slow_module).get(timeout=20) == "imported"
    finally:
        helpers.IMPORT_GATE.set()
        importer.join(10)


def test_terminate_says_which_jobs_had_started(fork_ctx):
    pool = poolx.Pool(1, context=fork_ctx)
    running = pool.apply_async(helpers.sleep, (30,))
    queued = pool.apply_async(helpers.square, (2,))
    wait_until(lambda: any(w["job"] for w in pool.stats()["workers"]))
    pool.terminate()
    for result, started in ((running, True), (queued, False)):
        with pytest.raises(poolx.Terminated) as info:
            result.get(0)
        assert info.value.started is started

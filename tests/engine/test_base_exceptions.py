"""BaseExceptions in a task (billiard's semantics) and SIGINT in a worker (the
standard library's): the caller gets the exception, the pool stays healthy."""

from __future__ import annotations

import os
import signal
import time

import pytest

import poolx
from tests.conftest import default_sigint, wait_until
from tests.engine import helpers


@pytest.fixture
def one(ctx):
    pool = poolx.Pool(1, context=ctx)
    yield pool
    pool.terminate()
    pool.join()


def test_a_base_exception_reaches_the_caller_and_the_worker_goes_on(one):
    pid = one.apply(helpers.getpid)
    with pytest.raises(helpers.CustomBaseError, match="^not an Exception$"):
        one.apply_async(helpers.raise_base_exception, ("not an Exception",)).get(30)
    with pytest.raises(helpers.CustomBaseError):
        one.map(helpers.raise_base_exception, ["in a map"])
    assert one.apply(helpers.getpid) == pid
    assert one.stats()["lost"] == 0


def test_system_exit_reaches_the_caller_and_the_worker_is_replaced(one):
    pid = one.apply(helpers.getpid)
    with pytest.raises(SystemExit) as info:
        one.apply_async(helpers.raise_system_exit, (3,)).get(30)
    assert info.value.code == 3
    assert one.apply(helpers.getpid) != pid
    stats = one.stats()
    assert (stats["lost"], stats["restarts"]) == (0, 0)


def test_sigint_during_a_task_raises_keyboard_interrupt_in_it(one):
    with pytest.raises(KeyboardInterrupt):
        one.apply_async(helpers.interrupt_self).get(30)
    assert one.apply(helpers.interrupt_self, (True,)) == "interrupted"
    assert one.apply(helpers.square, (3,)) == 9


def test_sigint_does_not_disturb_an_idle_worker(one):
    pid = one.apply(helpers.getpid)
    os.kill(pid, signal.SIGINT)  # a KeyboardInterrupt now would kill it (and lose the next job)
    assert one.apply(helpers.getpid) == pid
    assert one.apply(helpers.getpid) == pid
    assert one.stats()["lost"] == 0


CTRL_C_PROGRAM = """
import multiprocessing, sys, time
import poolx
from tests.engine import helpers
if __name__ == "__main__":
    with poolx.Pool(2, context=multiprocessing.get_context(sys.argv[1])) as pool:
        result = pool.map_async(helpers.sleep, [30, 30], chunksize=1)
        deadline = time.monotonic() + 30
        while any(w["job"] is None for w in pool.stats()["workers"]):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        print("busy", flush=True)
        result.get()
"""


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_ctrl_c_stops_the_program_with_one_traceback_and_no_orphans(tmp_path, method):
    import subprocess
    import sys

    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_PROGRAM)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, str(script), method], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=default_sigint, env={**os.environ, "PYTHONPATH": root})
    try:
        assert proc.stdout.readline() == "busy\n"
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: the whole foreground group
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert err.count("Traceback") == 1 and err.rstrip().endswith("KeyboardInterrupt"), err
    wait_until(lambda: _group_gone(proc.pid), timeout=10)  # no orphans: the group is empty


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False

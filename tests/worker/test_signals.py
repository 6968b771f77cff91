"""Pool processes and signals, as in production: a WorkerPool run by
start_pools in its own process (run_in_subprocess), then SIGTERM, a second
SIGTERM, or SIGKILL of the pool process."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from poolx.pool.process import DUPLICATE_SIGNAL_WINDOW, PopenProcess, run_in_subprocess
from tests.conftest import wait_until
from tests.worker import tasks
from tests.worker.serve import serve

WAIT = 20


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _log(tmp: Path) -> str:
    path = tmp / "log"
    return path.read_text() if path.exists() else ""


@pytest.fixture
def pool_process(tmp_path):
    procs: list[PopenProcess] = []

    def start(*args) -> PopenProcess:
        proc = run_in_subprocess(serve, str(tmp_path), *args)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(WAIT)
            pytest.fail(f"pool process still running; log:\n{_log(tmp_path)}")


def test_sigterm_stops_gracefully_running_tasks_finish(pool_process, tmp_path):
    proc = pool_process()
    wait_until((tmp_path / "g.started").exists, WAIT)
    worker = int((tmp_path / "g.started").read_text())
    proc.terminate()
    wait_until(lambda: "stopping gracefully" in _log(tmp_path), WAIT)
    assert proc.is_alive() and not _gone(worker)  # the task holds the shutdown
    (tmp_path / "g.unlock").touch()
    proc.join(WAIT)
    assert proc.exitcode == 0, _log(tmp_path)
    assert (tmp_path / "result").read_text() == "g done"
    assert (tmp_path / "exited").exists()
    assert "was killed" not in _log(tmp_path)
    wait_until(lambda: _gone(worker), WAIT)


def test_second_signal_stops_at_once(pool_process, tmp_path):
    proc = pool_process()
    wait_until((tmp_path / "g.started").exists, WAIT)
    worker = int((tmp_path / "g.started").read_text())
    proc.send_signal(signal.SIGINT)
    first = time.monotonic()
    wait_until(lambda: "stopping gracefully" in _log(tmp_path), WAIT)
    # a signal within DUPLICATE_SIGNAL_WINDOW is the same request delivered twice
    wait_until(lambda: time.monotonic() > first + DUPLICATE_SIGNAL_WINDOW + 0.2, WAIT)
    proc.send_signal(signal.SIGINT)
    proc.join(WAIT)
    assert proc.exitcode == 0, _log(tmp_path)
    result = (tmp_path / "result").read_text()
    assert result.startswith("failure: wt.touch_and_wait [default:")
    assert result.endswith("Terminated: the worker pool was stopped while the task ran")
    assert not (tmp_path / "g.out").exists()
    wait_until(lambda: _gone(worker), WAIT)


@pytest.mark.parametrize("init", [tasks.init, tasks.init_poll_fast])
def test_killing_the_pool_process_ends_its_workers(pool_process, tmp_path, init):
    proc = pool_process(init)
    wait_until((tmp_path / "g.started").exists, WAIT)
    worker = int((tmp_path / "g.started").read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(WAIT)
    wait_until(lambda: _gone(worker), 5)


def test_run_in_subprocess_and_popen_process(tmp_path):
    target = tmp_path / "out"
    proc = run_in_subprocess(Path.write_text, target, "hello")
    proc.join(WAIT)
    assert proc.exitcode == 0 and not proc.is_alive()
    assert target.read_text() == "hello"
    assert repr(proc).startswith(f"<PopenProcess pid={proc.pid}")
    assert proc.returncode == 0  # other attributes are the Popen's


def test_run_in_subprocess_lambda_and_join_timeout(tmp_path):
    flag = tmp_path / "flag"
    proc = run_in_subprocess(lambda: tasks.wait_for_file(flag, 30))
    proc.join(0.05)
    assert proc.is_alive()
    proc.terminate()
    proc.join(WAIT)
    assert proc.exitcode == -signal.SIGTERM

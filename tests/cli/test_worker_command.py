"""``poolx worker`` as an operator runs it: a subprocess, logs on stderr,
stopped by signals.  The queue is ``memory://`` in the command's own process;
tests/cli/producer.py enqueues tasks there (see its docstring)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from poolx.pool.process import DUPLICATE_SIGNAL_WINDOW
from tests.conftest import default_sigint, wait_until

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


@pytest.fixture
def worker(tmp_path):
    procs: list[subprocess.Popen] = []
    log = tmp_path / "stderr"

    def start(*args: str, new_session: bool = False) -> subprocess.Popen:
        with open(log, "w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "poolx", "worker", "memory://", *args],
                cwd=ROOT, env=_env(POOLX_TEST_PRODUCE_DIR=str(tmp_path)),
                stdout=subprocess.DEVNULL, stderr=err, start_new_session=new_session,
            )
        procs.append(proc)
        return proc

    yield start, log
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            pytest.fail(f"poolx worker still running; stderr:\n{log.read_text()}")


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_worker_runs_tasks_logs_and_stops_gracefully(worker, tmp_path):
    start, log = worker
    proc = start("--init", "tests.cli.producer:init", "--workers", "2", "--name", "cli-test",
                 "--prefetch", "0")
    wait_until((tmp_path / "g.started").exists, WAIT)
    wait_until((tmp_path / "div").exists, WAIT)
    assert _read(tmp_path / "num") == "ok: 5"
    assert _read(tmp_path / "div").endswith("ZeroDivisionError: division by zero")
    text = log.read_text()
    assert len(re.findall(r"cli-test: worker \d+ started", text)) == 2
    failed = [line for line in text.splitlines() if "task failed" in line]
    assert len(failed) == 1 and "wt.div [default:" in failed[0], text
    assert "Traceback" not in text
    proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "stopping gracefully" in log.read_text(), WAIT)
    assert proc.poll() is None  # the running task holds the shutdown
    (tmp_path / "g.unlock").touch()
    assert proc.wait(WAIT) == 0, log.read_text()
    assert _read(tmp_path / "g") == "ok: g done"
    text = log.read_text()
    assert len(re.findall(r"cli-test: worker \d+ exited", text)) == 2, text
    assert "cli-test stopped" in text


def test_second_signal_stops_at_once(worker, tmp_path):
    start, log = worker
    proc = start("--init", "tests.cli.producer:init", "--workers", "1")
    wait_until((tmp_path / "g.started").exists, WAIT)
    proc.send_signal(signal.SIGINT)
    first = time.monotonic()
    wait_until(lambda: "stopping gracefully" in log.read_text(), WAIT)
    wait_until(lambda: time.monotonic() > first + DUPLICATE_SIGNAL_WINDOW + 0.2, WAIT)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(WAIT) == 0, log.read_text()
    assert "second signal" in log.read_text()
    wait_until((tmp_path / "g").exists, WAIT)
    assert _read(tmp_path / "g").endswith("Terminated: the worker pool was stopped while the task ran")


def test_duplicate_signals_are_one_request(worker, tmp_path):
    """Issue 12: two signals at once (``timeout`` plus a process-group
    signal, a terminal's CTRL+C) used to stop the pool at once."""
    start, log = worker
    proc = start("--init", "tests.cli.producer:init", "--workers", "1")
    wait_until((tmp_path / "g.started").exists, WAIT)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "stopping gracefully" in log.read_text(), WAIT)
    assert proc.poll() is None  # the running task holds the shutdown
    (tmp_path / "g.unlock").touch()
    assert proc.wait(WAIT) == 0, log.read_text()
    assert _read(tmp_path / "g") == "ok: g done"
    assert "second signal" not in log.read_text()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_process_group_signal_lets_running_tasks_finish(worker, tmp_path, signum):
    """Issue 12: SIGTERM to the whole process group used to kill the workers
    too (the running task failed with WorkerLostError); a terminal's CTRL+C
    (SIGINT to the foreground group) raised KeyboardInterrupt in the running
    task, which failed instead of finishing."""
    start, log = worker
    proc = start("--init", "tests.cli.producer:init", "--workers", "2", new_session=True)
    wait_until((tmp_path / "g.started").exists, WAIT)
    os.killpg(proc.pid, signum)
    wait_until(lambda: "stopping gracefully" in log.read_text(), WAIT)
    (tmp_path / "g.unlock").touch()
    assert proc.wait(WAIT) == 0, log.read_text()
    assert _read(tmp_path / "g") == "ok: g done"
    text = log.read_text()
    assert "WorkerLostError" not in text and "exited (signal" not in text, text
    assert "KeyboardInterrupt" not in text, text


def test_worker_runs_n_plus_2_processes(worker):
    """Issue 18: ``--workers 2`` ran 5 processes: the command's, 2 workers,
    the forkserver and a multiprocessing resource tracker nothing in
    ``poolx worker`` needs.  Now: the command's, the forkserver, 2 workers."""
    start, log = worker
    proc = start("--init", "tests.worker.tasks:init", "--workers", "2", "--name", "count")
    wait_until(lambda: len(re.findall(r"count: worker \d+ started", log.read_text())) == 2, WAIT)
    children = psutil.Process(proc.pid).children(recursive=True)
    commands = [" ".join(child.cmdline()) for child in children]
    assert len(children) == 3, commands
    assert not [command for command in commands if "resource_tracker import" in command], commands
    assert len([child for child in children if child.ppid() == proc.pid]) == 1, commands  # the forkserver
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(WAIT) == 0, log.read_text()


def test_debug_log_level_shows_tracebacks(worker, tmp_path):
    start, log = worker
    proc = start("--init", "tests.cli.producer:init", "--workers", "1", "--log-level", "debug")
    wait_until((tmp_path / "g.started").exists, WAIT)
    assert "ZeroDivisionError" in log.read_text() and "Traceback" in log.read_text()
    (tmp_path / "g.unlock").touch()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(WAIT) == 0


def test_broken_init_exits_with_1(worker):
    start, log = worker
    proc = start("--init", "tests.worker.tasks:init_fails", "--workers", "1")
    assert proc.wait(WAIT) == 1, log.read_text()
    text = log.read_text()
    assert "poolx worker: " in text and "is broken" in text and "this init always fails" in text


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "the following arguments are required: --init"),
        (["--init", "no_such_module_xyz:init"], "cannot import 'no_such_module_xyz'"),
        (["--init", "tests.worker.tasks:nope"], "has no attribute 'nope'"),
        (["--init", "tests.worker.tasks"], "must look like module:function"),
        (["--init", "tests.worker.tasks:init", "--workers", "0"], "must be at least 1"),
        (["--init", "tests.worker.tasks:init", "--memory-limit", "lots"], "--memory-limit: must be a number of bytes"),
        (["--init", "tests.worker.tasks:init", "--log-level", "loud"], "unknown log level"),
        (["--init", "tests.worker.tasks:init", "--prefetch", "-1"], "--prefetch: must be at least 0"),
    ],
)
def test_usage_errors_exit_2_without_traceback(args, message):
    proc = subprocess.run([sys.executable, "-m", "poolx", "worker", "memory://", *args], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_scheme_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "poolx", "worker", "nosuch://x", "--init",
                           "tests.worker.tasks:init"], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=WAIT)
    assert proc.returncode == 2
    assert "unknown scheme 'nosuch'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_console_script_and_module_help():
    script = Path(sys.executable).with_name("poolx")
    commands = [[sys.executable, "-m", "poolx", "--help"]]
    if script.exists():
        commands.append([str(script), "--help"])
    for command in commands:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=WAIT, env=_env())
        assert proc.returncode == 0
        for name in ("worker", "status", "enqueue", "purge"):
            assert name in proc.stdout


def test_status_into_a_closed_pipe_exits_quietly():
    """``poolx status URL | head``: the reader goes away first."""
    proc = subprocess.Popen([sys.executable, "-m", "poolx", "status", "memory://"], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # as head does after its lines
    err = proc.stderr.read().decode()
    assert proc.wait(WAIT) == 0, err
    assert err == ""


def test_status_watch_refreshes_until_ctrl_c():
    proc = subprocess.Popen([sys.executable, "-m", "poolx", "status", "memory://", "--watch", "--interval",
                             "0.05"], cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=default_sigint)
    seen = 0
    for line in proc.stdout:
        seen += line.startswith("0 worker pools on memory://")
        if seen == 3:
            break
    proc.send_signal(signal.SIGINT)
    assert proc.wait(WAIT) == 0
    assert proc.stderr.read() == ""

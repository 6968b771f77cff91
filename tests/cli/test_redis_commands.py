"""The command line as operators use it with Redis: ``poolx worker`` on
"several machines" (processes) against one Redis, ``poolx status``,
``enqueue``, ``purge`` from other processes, and WorQ's pool.py + main.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from poolx import get_queue
from poolx.core import get_broker
from tests.conftest import wait_until
from tests.redis_server import free_port
from tests.taskqueue.conftest import delete_prefix, isolated_url

pytestmark = pytest.mark.redis
ROOT = Path(__file__).resolve().parents[2]
WAIT = 30
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


@pytest.fixture
def url(redis_server):
    url = isolated_url(redis_server.url)
    yield url
    get_broker(url).discard_pending_tasks()
    delete_prefix(url)


def poolx(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "poolx", *args], cwd=ROOT, env=ENV, input=stdin,
                          capture_output=True, text=True, timeout=WAIT)


@pytest.fixture
def workers(url, tmp_path):
    """``start(name, n)`` → a running ``poolx worker`` process on ``url``."""
    procs: list[tuple[subprocess.Popen, Path]] = []

    def start(name: str, n: int = 1, *extra: str) -> subprocess.Popen:
        log = tmp_path / f"{name}.log"
        with open(log, "w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "poolx", "worker", url, "--init", "tests.worker.tasks:init",
                 "--workers", str(n), "--name", name, *extra],
                cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=err)
        procs.append((proc, log))
        wait_until(lambda: "Press CTRL+C" in log.read_text() or proc.poll() is not None, WAIT)
        assert proc.poll() is None, log.read_text()
        return proc

    yield start
    for proc, log in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:  # a task still runs: the second signal stops at once
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail(f"poolx worker did not stop:\n{log.read_text()}")


def test_enqueue_and_wait_across_processes(url, workers):
    workers("alpha", 2)
    done = poolx("enqueue", url, "wt.add", "[[1, 2, 3]]", "--wait", "20")
    assert done.returncode == 0, done.stderr
    task_id, value = done.stdout.splitlines()
    assert value == "6" and len(task_id) == 32
    failed = poolx("enqueue", url, "wt.div", "[1, 0]", "--wait", "20")
    assert failed.returncode == 1
    assert "task failed: wt.div" in failed.stderr and "ZeroDivisionError" in failed.stderr


def test_status_of_several_pools_on_one_redis(url, workers):
    workers("alpha", 2)
    beta = workers("beta", 1)
    shown = poolx("status", url)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("2 worker pools on ")
    assert "alpha on " in shown.stdout and "beta on " in shown.stdout
    assert f"(pid {beta.pid})" in shown.stdout
    data = json.loads(poolx("status", url, "--json").stdout)
    assert sorted(p["name"] for p in data["pools"]) == ["alpha", "beta"]
    assert sorted(len(p["workers"]) for p in data["pools"]) == [1, 2]
    assert data["queues"]["default"] == {"waiting": 0, "scheduled": 0, "in_flight": 0,
                                         "tasks": [], "periodic": []}
    beta.send_signal(signal.SIGTERM)
    assert beta.wait(WAIT) == 0
    data = json.loads(poolx("status", url, "--json").stdout)
    assert [p["name"] for p in data["pools"]] == ["alpha"]


def test_tasks_spread_over_pools(url, workers, tmp_path):
    workers("one", 1, "--status-interval", "0.1")
    workers("two", 1, "--status-interval", "0.1")
    q = get_queue(url)
    held = [q.wt.touch_and_wait(str(tmp_path), name) for name in ("x", "y")]
    wait_until(lambda: (tmp_path / "x.started").exists() and (tmp_path / "y.started").exists(), WAIT)

    def both_busy():
        status = json.loads(poolx("status", url, "--json").stdout)
        return status if status["queues"]["default"]["in_flight"] == 2 else None

    status = wait_until(both_busy, WAIT)
    assert sorted(len(p["in_flight"]) for p in status["pools"]) == [1, 1]
    for name in ("x", "y"):
        (tmp_path / f"{name}.unlock").touch()
    assert all(res.wait(WAIT) for res in held)


def test_status_lists_queued_tasks(url):
    q = get_queue(url, "p")
    waiting = [q.wt.num(i) for i in range(3)]
    data = json.loads(poolx("status", url, "--queue", "p", "--json", "--tasks", "2").stdout)
    tasks = data["queues"]["p"]["tasks"]
    assert [(t["id"], t["name"]) for t in tasks] == [(res.id, "wt.num") for res in waiting[:2]]
    assert all(0 <= t["age"] < 60 for t in tasks)


def test_purge(url):
    q = get_queue(url, "p")
    waiting = [q.wt.num(i) for i in range(3)]
    declined = poolx("purge", url, "--queue", "p", stdin="n\n")
    assert declined.returncode == 1 and "Discard 3 waiting tasks" in declined.stderr
    done = poolx("purge", url, "--queue", "p", stdin="y\n")
    assert done.returncode == 0 and "discarded 3 tasks" in done.stdout
    assert all(res.wait(5) for res in waiting)  # their waiters are told at once


def test_password_is_never_printed(url, workers):
    shown = poolx("status", url.replace("redis://", "redis://:hunter2@", 1))
    assert "hunter2" not in shown.stdout + shown.stderr


@pytest.mark.parametrize("command", [["status"], ["enqueue", "wt.num"], ["purge", "--yes"]])
def test_unreachable_redis_exits_1(command):
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = poolx(command[0], url, *command[1:])
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"poolx {command[0]}: cannot reach {url}")
    assert "Traceback" not in done.stderr


def test_worker_with_unreachable_redis_exits_1():
    done = poolx("worker", f"redis://127.0.0.1:{free_port()}/0", "--init", "tests.worker.tasks:init")
    assert done.returncode == 1 and "cannot reach" in done.stderr
    assert "Traceback" not in done.stderr


def test_worq_quick_start_with_a_process_pool(url, tmp_path):
    log = tmp_path / "pool.log"
    with open(log, "w") as err:
        pool = subprocess.Popen([sys.executable, "examples/worq/pool.py", url], cwd=ROOT, env=ENV,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_until(lambda: "Press CTRL+C" in log.read_text(), WAIT)
        main = subprocess.run([sys.executable, "examples/worq/main.py", url], cwd=ROOT, env=ENV,
                              capture_output=True, text=True, timeout=WAIT)
        assert main.returncode == 0, main.stderr
        assert main.stdout == "0 + 1 + ... + 9 = 45\n"
    finally:
        pool.send_signal(signal.SIGINT)
        assert pool.wait(WAIT) == 0, log.read_text()


def test_worker_serves_prometheus_metrics(url, workers):
    """``poolx worker --metrics-port``: one server for every queue's pool,
    scraped over HTTP and parsed with prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    workers("metered", 1, "--queue", "default", "--queue", "other", "--metrics-port", str(port))
    q = get_queue(url)
    assert q.wt.add([1, 2]).wait(WAIT)
    failed = q.wt.div(1, 0)
    assert failed.wait(WAIT)
    get_queue(url, name="other").wt.num("7").wait(WAIT)

    def scrape() -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    samples = scrape()
    # one pool per --queue, in their order: pool "0" and "1"
    assert samples[("poolx_tasks_succeeded_total",
                    (("pool", "0"), ("queue", "default"), ("task", "wt.add")))] == 1
    assert samples[("poolx_tasks_failed_total",
                    (("outcome", "error"), ("pool", "0"), ("queue", "default"), ("task", "wt.div")))] == 1
    assert samples[("poolx_tasks_succeeded_total",
                    (("pool", "1"), ("queue", "other"), ("task", "wt.num")))] == 1
    for pool, queue in (("0", "default"), ("1", "other")):
        assert samples[("poolx_queue_depth", (("pool", pool), ("queue", queue)))] == 0
        assert samples[("poolx_redis_reconnects_total", (("pool", pool), ("queue", queue)))] == 0
        assert samples[("poolx_workers", (("pool", pool), ("queue", queue), ("state", "idle")))] == 1


def test_worker_metrics_port_in_use_exits_1(url):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = poolx("worker", url, "--init", "tests.worker.tasks:init", "--workers", "1",
                     "--metrics-port", str(taken.getsockname()[1]))
    assert done.returncode == 1
    assert "cannot serve metrics on 127.0.0.1:" in done.stderr


def test_status_of_a_queue_name_redis_cannot_have_is_a_usage_error(url):
    """Exit 2 naming the name (a traceback and exit 1 once the status moved
    into poolx.status)."""
    done = poolx("status", url, "--queue", "")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("poolx status: error: ") and "Traceback" not in done.stderr

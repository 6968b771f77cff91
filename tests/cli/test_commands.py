"""``poolx status | enqueue | purge`` and help texts, run in-process against
``memory://`` (its queues live in this process) with a WorkerPool here."""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator

import pytest

from poolx import Task, get_queue
from poolx.cli import main
from poolx.core import get_broker, register_backend
from poolx.queue.base import AbstractTaskQueue
from poolx.queue.registry import registry
from tests.conftest import wait_until
from tests.worker import tasks

WAIT = "20"


@pytest.fixture
def pool(url, start_pool):  # noqa: F811
    return start_pool(get_broker(url), tasks.init, name="cli-pool")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- help and usage ------------------------------------------------------------------


@pytest.mark.parametrize(
    "command, words",
    [
        ([], ["worker", "status", "enqueue", "purge", "Exit codes"]),
        (["worker"], ["--init", "--queue", "--workers", "--max-worker-tasks", "--timeout",
                      "--soft-timeout", "--memory-limit", "--name", "--log-level", "--prefetch",
                      "SIGTERM"]),
        (["status"], ["--json", "URL", "--queue", "--pool", "--watch", "--interval", "--tasks",
                      "--failed"]),
        (["enqueue"], ["TASK", "ARGS_JSON", "--queue", "--wait"]),
        (["purge"], ["--queue", "--yes"]),
    ],
)
def test_help(capsys, command, words):
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0
    for word in words:
        assert word in out


def test_version(capsys):
    import poolx

    code, out, err = run(capsys, "--version")
    assert (code, out, err) == (0, f"poolx {poolx.__version__}\n", "")


def test_no_command_is_a_usage_error(capsys):
    code, _, err = run(capsys)
    assert code == 2 and "COMMAND" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["status", "nosuch://x"], "invalid broker URL: nosuch://x"),
        (["status", "not a url"], "invalid broker URL: not a url (malformed"),
        (["status", "redis://127.0.0.1:1/0?bogus=1"], "unknown option 'bogus'"),
        (["enqueue", "memory://", "t", "[1"], "ARGS_JSON is not valid JSON"),
        (["enqueue", "memory://", "t", "--wait", "0"], "must be a positive number"),
        (["purge", "memory://", "--queue"], "expected one argument"),
        (["worker", "memory://", "--init", "m:f", "--workers", "two"], "not an integer: 'two'"),
        (["worker", "memory://", "--init", "m:f", "--timeout", "-1"], "must be a positive number"),
        (["worker", "memory://", "--init", "m:f", "--metrics-port", "http"],
         "not a port number: 'http'"),
        (["worker", "memory://", "--init", "m:f", "--metrics-port", "65536"],
         "not a port number (0 to 65535): '65536'"),
    ],
)
def test_usage_errors(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


# -- status --------------------------------------------------------------------------------


def test_status_lists_live_pools_and_queues(capsys, url, pool):
    get_queue(url, "other").wt.num(1)  # waits: nobody consumes 'other'
    code, out, _ = run(capsys, "status", url)
    assert code == 0
    assert out.startswith(f"1 worker pool on {url}\n")
    assert "cli-pool on " in out and "queue default: running" in out
    assert "workers: 2 (" in out and "last heartbeat" in out
    assert "  default: 0 waiting, 0 in flight" in out
    assert "other" not in out  # no pool consumes it: not shown unless asked for


def test_status_filters_by_queue_and_pool_name(capsys, url, pool):
    get_queue(url, "other").wt.num(1)
    _, out, _ = run(capsys, "status", url, "--queue", "other")
    assert out.startswith(f"0 worker pools on {url}\n")  # cli-pool consumes 'default'
    assert "  other: 1 waiting, 0 in flight" in out and "default" not in out
    _, out, _ = run(capsys, "status", url, "--queue", "other", "--queue", "default")
    assert out.startswith(f"1 worker pool on {url}\n") and "  other: 1 waiting" in out
    _, out, _ = run(capsys, "status", url, "--pool", "nobody")
    assert out.startswith(f"0 worker pools on {url}\n")
    _, out, _ = run(capsys, "status", url, "--pool", "cli-pool")
    assert out.startswith(f"1 worker pool on {url}\n") and "cli-pool on " in out


def test_status_lists_the_next_queued_tasks(capsys, url):
    waiting = [get_queue(url, "other").wt.num(i) for i in range(3)]
    code, out, _ = run(capsys, "status", url, "--queue", "other", "--tasks", "2")
    assert code == 0
    assert out.endswith(
        "  other: 3 waiting, 0 in flight\n"
        f"    {waiting[0].id}  wt.num  waiting 0s\n"
        f"    {waiting[1].id}  wt.num  waiting 0s\n"
        "    ... 1 more\n"
    )
    _, out, _ = run(capsys, "status", url, "--queue", "other")  # default: up to 10
    assert [res.id in out for res in waiting] == [True] * 3 and "more" not in out
    _, out, _ = run(capsys, "status", url, "--queue", "other", "--tasks", "0")
    assert out.endswith("  other: 3 waiting, 0 in flight\n")
    status = json.loads(run(capsys, "status", url, "--queue", "other", "--json", "--tasks", "1")[1])
    [task] = status["queues"]["other"]["tasks"]
    assert task["id"] == waiting[0].id and task["name"] == "wt.num"
    assert 0 <= task["age"] < 60 and task["enqueued_at"] == pytest.approx(status["time"] - task["age"])


@pytest.mark.parametrize("value", ["-1", "x"])
@pytest.mark.parametrize("option", ["--tasks", "--failed"])
def test_status_tasks_must_be_a_count(capsys, url, option, value):
    code, _, err = run(capsys, "status", url, option, value)
    assert code == 2 and f"argument {option}: " in err


def test_status_lists_the_tasks_that_failed_recently(capsys, url, start_pool):
    """Newest first, two lines each; a newline or a terminal escape in an
    error text is printed escaped (JSON keeps the text as it is)."""
    start_pool(get_broker(url), tasks.init, name="failing-pool", workers=1, status_interval=0.05)
    failing = []
    for message in ("first", "second", "third\n\x1b[31mred"):
        failing.append(get_queue(url).wt.fail(message))
        assert failing[-1].wait(float(WAIT))
    wait_until(lambda: len(json.loads(run(capsys, "status", url, "--json")[1])["failed"]) == 3, float(WAIT))
    code, out, _ = run(capsys, "status", url, "--failed", "2")
    assert code == 0
    lines = out.splitlines()
    at = lines.index("recently failed:")
    assert len(lines) == at + 5  # the last section: two failures, two lines each
    for failure, message, (head, error) in zip(failing[2:0:-1], ("third\\n\\x1b[31mred", "second"),
                                               (lines[at + 1:at + 3], lines[at + 3:at + 5]), strict=True):
        assert re.fullmatch(rf"  \d+s ago  wt\.fail \[default:{failure.id}\]  failing-pool on \S+ "
                            rf"\(worker \d+\)", head), head
        assert error == f"    ValueError: {message}"
    _, out, _ = run(capsys, "status", url, "--failed", "0")
    assert "recently failed" not in out and "ValueError" not in out
    status = json.loads(run(capsys, "status", url, "--json", "--failed", "1")[1])
    [last] = status["failed"]
    assert (last["id"], last["task"], last["queue"], last["pool"], last["error"]) == (
        failing[2].id, "wt.fail", "default", "failing-pool", "ValueError: third\n\x1b[31mred")
    assert isinstance(last["worker"], int) and 0 <= last["age"] < 60


class _Unlisted(AbstractTaskQueue):
    """A backend without the optional queued_tasks."""

    def size(self):
        return 2

    def live_pools(self):
        return []


def test_status_of_a_backend_that_cannot_list_its_tasks(capsys):
    register_backend("unlisted", _Unlisted)
    try:
        code, out, _ = run(capsys, "status", "unlisted://x")
        status = json.loads(run(capsys, "status", "unlisted://x", "--json")[1])
    finally:
        registry.unregister("unlisted")
    assert code == 0 and out.endswith("  default: 2 waiting, 0 in flight\n")
    assert status["queues"]["default"] == {"waiting": 2, "scheduled": None, "in_flight": 0,
                                           "tasks": None, "periodic": None}


def test_status_shows_scheduled_tasks(capsys, url):
    q = get_queue(url, "other")
    q.wt.num(1)
    Task(q.wt.num, delay=60)(2)
    Task(q.wt.num, delay=60)(3)
    code, out, _ = run(capsys, "status", url, "--queue", "other", "--tasks", "0")
    assert code == 0 and out.endswith("  other: 1 waiting, 2 scheduled, 0 in flight\n")
    status = json.loads(run(capsys, "status", url, "--queue", "other", "--json")[1])
    assert status["queues"]["other"]["scheduled"] == 2


def test_status_lists_periodic_entries_with_their_next_run(capsys, url):
    broker = get_broker(url, "other")
    broker.periodic(broker.queue().wt.num, every=90, args=(1,), name="cleanup")
    broker.periodic(broker.queue().wt.num, cron="0 0 1 1 *", name="yearly")
    [first, second] = broker.periodic_entries()
    code, out, _ = run(capsys, "status", url, "--queue", "other")
    assert code == 0
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(first.next_run))
    yearly = time.strftime("%Y-01-01 00:00:00 UTC", time.gmtime(second.next_run))
    lines = out.splitlines()
    assert lines[-3] == "  other: 0 waiting, 0 in flight"
    assert re.fullmatch(rf"    periodic cleanup: wt\.num every 90, next run {when} \(in 1m(29|30)s\)",
                        lines[-2]), lines[-2]
    assert re.fullmatch(rf"    periodic yearly: wt\.num cron 0 0 1 1 \*, next run {yearly} "
                        r"\(in [0-9dhms]+\)", lines[-1]), lines[-1]
    status = json.loads(run(capsys, "status", url, "--queue", "other", "--json")[1])
    listed = status["queues"]["other"]["periodic"]
    assert [entry["name"] for entry in listed] == ["cleanup", "yearly"]
    assert listed[0]["schedule"] == "every 90" and listed[0]["task"] == "wt.num"
    assert listed[0]["next_run"] == first.next_run and 85 < listed[0]["due_in"] <= 90
    assert broker.unperiodic("cleanup") and broker.unperiodic("yearly")
    status = json.loads(run(capsys, "status", url, "--queue", "other", "--json")[1])
    assert status["queues"]["other"]["periodic"] == []


def test_status_json(capsys, url, pool, tmp_path):
    res = get_queue(url).wt.touch_and_wait(str(tmp_path), "s")
    wait_until((tmp_path / "s.started").exists, 20)

    def busy():
        pool.consumer._publish_status()  # publish now rather than at the next interval
        status = json.loads(run(capsys, "status", url, "--json")[1])
        [info] = status["pools"]
        states = sorted(w["state"] for w in info["workers"])
        return info if status["queues"]["default"]["in_flight"] == 1 and states == ["busy", "idle"] else None

    info = wait_until(busy, 20)
    assert info["name"] == "cli-pool" and info["pid"] > 0 and info["host"]
    assert {"started", "heartbeat", "tasks_done", "tasks_failed", "workers", "in_flight"} <= set(info)
    assert info["in_flight"] == [f"wt.touch_and_wait [default:{res.id}]"]
    assert info["running"] == info["in_flight"] and info["prefetched"] == []
    (tmp_path / "s.unlock").touch()
    assert res.wait(20)


def test_stopped_pools_disappear(capsys, url, pool):
    pool.stop()
    code, out, _ = run(capsys, "status", url)
    assert code == 0 and out.startswith(f"0 worker pools on {url}")


def test_silent_pools_expire(capsys, url):
    get_broker(url).taskqueue.register_pool("ghost", json.dumps({"name": "ghost"}), 0.05)
    wait_until(lambda: "ghost" not in run(capsys, "status", url)[1], 10)


# -- enqueue -------------------------------------------------------------------------------


def _consumed_here(url: str, queue: str = "default") -> None:
    """As if a pool in this process consumed ``queue`` (memory:// needs one)."""
    get_broker(url).taskqueue.register_pool(f"test-{queue}", json.dumps({"queue": queue}), 60)


def test_enqueue_to_memory_needs_a_pool_in_this_process(capsys, url):
    code, out, err = run(capsys, "enqueue", url, "wt.num", "[7]")
    assert (code, out) == (2, "")
    assert "a memory:// queue lives inside one process" in err and "'default'" in err
    assert len(get_broker(url)) == 0  # nothing enqueued


def test_enqueue_prints_the_id(capsys, url):
    _consumed_here(url)
    code, out, _ = run(capsys, "enqueue", url, "wt.num", "[7]")
    assert code == 0
    task = get_broker(url).next_task(timeout=1)
    assert out == f"{task.id}\n" and task.name == "wt.num" and task.args == (7,)


@pytest.mark.parametrize(
    "args, result",
    [
        (["wt.add", "[[1, 2, 3]]"], "6"),
        (["wt.num", '"12"'], "12"),
        (["wt.echo", '{"a": 1}'], '[[], {"a": 1}]'),
        (["wt.echo"], "[[], {}]"),
    ],
)
def test_enqueue_and_wait(capsys, url, pool, args, result):
    code, out, err = run(capsys, "enqueue", url, *args, "--wait", WAIT)
    assert code == 0, err
    task_id, value = out.splitlines()
    assert len(task_id) == 32 and value == result


def test_enqueue_failed_task_exits_1(capsys, url, pool):
    code, out, err = run(capsys, "enqueue", url, "wt.div", "[1, 0]", "--wait", WAIT)
    assert code == 1
    assert err.startswith("poolx enqueue: task failed: wt.div [default:")
    assert "ZeroDivisionError: division by zero" in err
    assert "Traceback" not in err


def test_enqueue_with_a_time_limit(capsys, url, pool):
    code, _, err = run(capsys, "enqueue", url, "wt.sleep", "[30]", "--timeout", "0.2", "--wait", WAIT)
    assert code == 1
    assert "TimeLimitExceeded: hard time limit (0.2 s) exceeded" in err


def test_enqueue_wait_times_out(capsys, url):
    _consumed_here(url, "idle")
    code, out, err = run(capsys, "enqueue", url, "wt.num", "[1]", "--queue", "idle", "--wait", "0.05")
    assert code == 1
    assert "no result within 0.05 s" in err and "enqueued" in err
    assert get_broker(url, "idle").next_task(timeout=1).id == out.strip()


# -- purge ---------------------------------------------------------------------------------


@pytest.fixture
def waiting(url) -> Iterator[list]:
    yield [get_queue(url, "p").wt.num(i) for i in range(3)]


def test_purge_with_yes(capsys, url, waiting):
    code, out, _ = run(capsys, "purge", url, "--queue", "p", "--yes")
    assert code == 0 and out.startswith("discarded 3 tasks from queue 'p'")
    assert len(get_broker(url, "p")) == 0
    assert [res.wait(1) for res in waiting] == [True] * 3  # waiters learn at once


def test_purge_confirmed(capsys, monkeypatch, url, waiting):
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    code, out, err = run(capsys, "purge", url, "--queue", "p")
    assert code == 0
    assert "Discard 3 waiting tasks in queue 'p'" in err
    assert len(get_broker(url, "p")) == 0


@pytest.mark.parametrize("answer", ["n\n", "\n", ""])
def test_purge_declined(capsys, monkeypatch, url, waiting, answer):
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    code, _, err = run(capsys, "purge", url, "--queue", "p")
    assert code == 1 and "purge cancelled" in err
    assert len(get_broker(url, "p")) == 3


def test_purge_empty_queue(capsys, url):
    code, out, _ = run(capsys, "purge", url, "--queue", "empty")
    assert code == 0 and out.startswith("no tasks waiting in queue 'empty'")


# -- unreachable brokers ---------------------------------------------------------------------


class _Unreachable(AbstractTaskQueue):
    def _down(self, *args, **kw):
        raise ConnectionError("Error 111 connecting to down:1. Connection refused.")

    size = live_pools = enqueue_task = discard_pending = get = pop_result = _down


@pytest.fixture
def down() -> Iterator[str]:
    register_backend("down", _Unreachable)
    yield "down://:secret@host:1/0"
    registry.unregister("down")


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["enqueue", "{url}", "wt.num"],
        ["purge", "--yes"],
    ],
)
def test_unreachable_broker_is_one_line_exit_1(capsys, down, argv):
    argv = [arg.format(url=down) for arg in argv]
    if "{url}" not in " ".join(argv) and down not in argv:
        argv.insert(1, down)
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert err.startswith(f"poolx {argv[0]}: cannot reach down://:***@host:1/0: ConnectionError")
    assert "secret" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_worker_with_unreachable_broker(capsys, down, monkeypatch):
    import logging

    monkeypatch.setattr(logging, "basicConfig", lambda **kw: None)
    for name in ("", "poolx.task"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    code, _, err = run(capsys, "worker", down, "--init", "tests.worker.tasks:init")
    assert code == 1 and "cannot reach down://:***@host:1/0" in err

"""``poolx cancel URL TASK_ID...`` from a process that neither produced nor
consumes the tasks: a running task of a ``poolx worker`` (whose workers
ignore SIGTERM) is killed, a queued one never runs; exit codes 0 (every id
cancelled), 1 (any not), 2 (usage)."""

from __future__ import annotations

import psutil
import pytest

from poolx import Task, get_queue
from poolx.task import TaskCancelled
from tests.cli.test_redis_commands import poolx, url, workers  # noqa: F401 - fixtures
from tests.conftest import wait_until
from tests.worker import tasks

WAIT = 30


def _cancelled(result) -> None:
    assert result.wait(WAIT)
    with pytest.raises(TaskCancelled):
        _ = result.value


@pytest.mark.redis
def test_cancel_running_and_queued_tasks_from_another_process(url, workers, tmp_path):  # noqa: F811
    workers("alpha", 1)
    q = get_queue(url)
    running = q.wt.touch_and_wait(str(tmp_path), "run", 60)
    queued = q.wt.touch_and_wait(str(tmp_path), "queued", 60)  # waits: the one worker is busy
    assert tasks.wait_for_file(tmp_path / "run.started", WAIT)
    pid = int((tmp_path / "run.started").read_text())
    # The queued one first: cancelled after the running one, it could reach
    # the freed worker (and start) before the worker's consumer heard of it.
    done = poolx("cancel", url, queued.id, running.id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"cancelled {queued.id}", f"cancelled {running.id}"]
    _cancelled(running)
    _cancelled(queued)
    wait_until(lambda: not psutil.pid_exists(pid), WAIT)
    after = q.wt.getpid()
    assert after.wait(WAIT) and after.value != pid
    assert not (tmp_path / "queued.started").exists()


@pytest.mark.redis
def test_exit_code_1_when_any_task_was_not_cancelled(url):  # noqa: F811
    q = get_queue(url)
    waiting = Task(q.wt.echo, delay=60)(1)
    done = poolx("cancel", url, "no-such-id", waiting.id)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "not cancelled no-such-id (finished, or unknown in queue 'default')",
        f"cancelled {waiting.id}",
    ]
    assert "1 of 2 tasks not cancelled" in done.stderr
    _cancelled(waiting)
    again = poolx("cancel", url, waiting.id)
    assert again.returncode == 1 and again.stdout.startswith("not cancelled")


@pytest.mark.redis
def test_the_queue_option_names_the_queue(url):  # noqa: F811
    other = get_queue(url, name="jobs")
    res = other.wt.echo(1)
    assert poolx("cancel", url, res.id).returncode == 1  # not in the default queue
    done = poolx("cancel", url, res.id, "--queue", "jobs")
    assert done.returncode == 0, done.stderr
    _cancelled(res)


def test_usage_errors_exit_2():
    missing = poolx("cancel", "redis://127.0.0.1:1")
    assert missing.returncode == 2 and "TASK_ID" in missing.stderr
    memory = poolx("cancel", "memory://", "some-id")
    assert memory.returncode == 2 and "memory:// queue lives inside one process" in memory.stderr
    assert "nothing to cancel" in memory.stderr and "would be lost" not in memory.stderr
    bad = poolx("cancel", "nope://x", "some-id")
    assert bad.returncode == 2 and "unknown scheme" in bad.stderr

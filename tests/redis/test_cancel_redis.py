"""Cancel on Redis across processes and machines' roles: the canceller is
neither the producer nor the consumer (a broker of its own, or another
process), the pool's process learns of the cancel from Redis at once (a
notice it blocks on, not its heartbeat), a cancel racing with completion
has one outcome, and the example runs unchanged on Redis."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from poolx import get_queue
from poolx.const import TASK_CANCELLED
from poolx.core import get_broker
from poolx.task import TaskCancelled
from tests.conftest import wait_until
from tests.redis.test_process_pool import pool_process  # noqa: F401 - a fixture
from tests.test_docs import ENV, ROOT, included_examples
from tests.worker import tasks
from tests.worker.conftest import start_pool  # noqa: F401 - a fixture
from tests.worker.test_cancel_running import WAIT, cancelled, started_pid

NOTICE_BOUND = 10.0
"""How long the pool's process may take to kill a cancelled task's worker
here: the notice wakes it at once (milliseconds); a rare race (the cancel
lands while the task is being fetched) waits for the watcher's next look,
at most 5 s.  The heartbeat (every 30 s by default) is not involved."""


def cancel_running(url, tmp_path, name):
    """Run a task that waits 60 s, cancel it from a broker of its own (not
    the producer's, not the consumer's) and see its worker die within
    NOTICE_BOUND; return the task's Deferred and its worker's pid."""
    res = get_queue(url).wt.touch_and_wait(str(tmp_path), name, 60)
    pid = started_pid(tmp_path, name)
    with get_broker(url) as canceller:
        start = time.monotonic()
        assert canceller.cancel(res.id) is True
        wait_until(lambda: not psutil.pid_exists(pid), WAIT)
        assert time.monotonic() - start < NOTICE_BOUND
        assert canceller.cancel(res.id) is False
    return res, pid


def test_a_separate_broker_cancels_a_task_running_in_this_process(url, start_pool,  # noqa: F811
                                                                 tmp_path):
    start_pool(get_broker(url), tasks.init, workers=1)
    res, pid = cancel_running(url, tmp_path, "a")
    cancelled(res)
    after = get_queue(url).wt.getpid()
    assert after.wait(WAIT) and after.value != pid


def test_a_pool_in_another_process_kills_the_cancelled_task(url, pool_process,  # noqa: F811
                                                           tmp_path):
    pool_process(workers=1)
    res, pid = cancel_running(url, tmp_path, "b")
    cancelled(res)
    after = get_queue(url).wt.getpid()
    assert after.wait(WAIT) and after.value != pid
    assert not (tmp_path / "b.out").exists()


def test_cancel_racing_with_completion_in_a_process_pool(url, start_pool):  # noqa: F811
    """Exactly one outcome each time: True with the cancel as the outcome,
    False with the result; the pool keeps working throughout."""
    start_pool(get_broker(url), tasks.init, workers=2)
    q = get_queue(url)
    with get_broker(url) as canceller:
        for i in range(40):
            res = q.wt.sleep(0.002 * (i % 4))
            if i % 2:
                wait_until(lambda res=res: canceller.taskqueue.get_status(res.id) != "enqueued",
                           WAIT, interval=0.001)
            was_cancelled = canceller.cancel(res.id)
            assert res.wait(WAIT)
            if was_cancelled:
                with pytest.raises(TaskCancelled):
                    _ = res.value
            else:
                assert res.value == 0.002 * (i % 4)
    last = q.wt.getpid()
    assert last.wait(WAIT)


def test_the_example_runs_on_redis(url):
    [(script, output)] = included_examples(ROOT / "docs" / "cancel.rst")
    done = subprocess.run([sys.executable, script, url], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == output


def test_the_heartbeat_of_a_cancelled_task_is_not_a_lost_lease(url, caplog):
    """The consumer's view: a task it took is cancelled by another broker;
    its heartbeat does not warn of a lost lease, and cancelled_tasks reports
    it once (a task whose lease is really gone still warns)."""
    broker = get_broker(url)
    res, other = get_queue(url).wt.echo(1), get_queue(url).wt.echo(2)
    taken = broker.next_task(timeout=WAIT)
    assert taken is not None and taken.id == res.id
    with get_broker(url) as canceller:
        assert canceller.cancel(res.id) is True
    with caplog.at_level("WARNING"):
        broker.heartbeat(taken)
        assert "lost its lease" not in caplog.text
        assert broker.cancelled_tasks([taken.id], timeout=WAIT) == [taken.id]
        assert broker.cancelled_tasks([taken.id], timeout=0) == []
        broker.set_result(taken, "late")  # dropped: the cancel is the outcome
        assert "lost its lease" not in caplog.text
        answered = broker.next_task(timeout=WAIT)
        assert answered is not None and answered.id == other.id
        broker.set_result(answered, 2)
        broker.taskqueue.flush()  # results are committed by the writer thread
        broker.heartbeat(answered)  # answered, not cancelled: its lease is gone
        assert "lost its lease" in caplog.text
    cancelled(res)
    assert other.wait(WAIT) and other.value == 2


def test_a_cancel_inside_a_batch_sees_the_batched_task(url):
    broker = get_broker(url)
    q = broker.queue()
    with broker.batch():
        res = q.wt.echo(1)
        assert res.cancel() is True
    cancelled(res)


def test_a_lost_notice_is_made_up_for_by_the_next_look(url):
    """The rare race: the notice was consumed before the task was known as
    held.  The watcher's next look (at the end of its wait, 5 s at most in
    a consumer) finds the marker all the same."""
    broker = get_broker(url)
    res = get_queue(url).wt.echo(1)
    taken = broker.next_task(timeout=WAIT)
    assert get_broker(url).cancel(res.id) is True
    queue = broker.taskqueue
    assert queue.client.delete(f"{queue._key}cn:{queue.consumer_id}") == 1  # the notice
    assert broker.cancelled_tasks([taken.id], timeout=0.2) == [taken.id]


def test_the_cancelled_outcome_is_kept_an_hour(url):
    res = get_queue(url).wt.echo(1)
    assert res.cancel() is True
    queue = get_broker(url).taskqueue
    assert 3_590_000 < queue.client.pttl(f"{queue._key}t:{res.id}") <= 3_600_000
    cancelled(res)


def test_a_cancel_retried_after_its_reply_was_lost_still_says_cancelled(url):
    """The retry policy repeats a script call whose reply was lost (Redis
    restarted after the write): the repeat must answer as the first call
    did — the caller cancelled the task — not "finished or unknown"."""
    broker = get_broker(url)
    queue = broker.taskqueue
    running = get_queue(url).wt.echo(1)
    assert broker.next_task(timeout=WAIT).id == running.id
    waiting = get_queue(url).wt.echo(2)

    def cancel(task_id, nonce):  # one script call, as the retry policy repeats it
        return queue._call("cancel", task_id, broker.serialize(TASK_CANCELLED), 60_000, nonce,
                           30_000)

    assert cancel(running.id, b"nonce-1") == 2
    assert cancel(running.id, b"nonce-1") == 2  # the retry
    assert cancel(running.id, b"nonce-2") == 0  # a new call: it is cancelled already
    assert cancel(waiting.id, b"nonce-3") == 1
    assert cancel(waiting.id, b"nonce-3") == 1
    cancelled(running)
    cancelled(waiting)

"""Cancelling tasks (poolx, beyond WorQ), checked on every backend URL
(``memory://``, ``redis://``, ``redis+cluster://``): ``Deferred.cancel`` and
``Broker.cancel`` of queued, pending, scheduled (delay, retry back-off),
running (a thread WorkerPool: the thread runs on, its late result is
dropped) and finished tasks, dependents following ``on_error``, and the
race of a cancel with the task's completion (exactly one outcome).

A process pool (a running task's worker is killed) once per backend here;
more of it in ``tests/worker/test_cancel_running.py`` and
``tests/redis/test_cancel_redis.py``.
"""

from __future__ import annotations

import pickle
import threading

import psutil
import pytest

import poolx
from poolx import Task, TaskSpace, get_broker
from poolx.const import COMPLETED, ENQUEUED, PENDING, PROCESSING, SCHEDULED
from poolx.consumer import BrokerConsumer
from poolx.task import CANCELLED_ERROR, Retry, TaskCancelled, TaskFailure
from tests.conftest import wait_until
from tests.worker import tasks as worker_tasks
from tests.worker.conftest import CONTEXT
from tests.worker.test_cancel_running import started_pid

from .helpers import WAIT, thread_worker, value_of


class Calls:
    """Task callables that record their calls; ``hold`` blocks until released."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.space = TaskSpace("cx")
        self.queue = None  # set by the fixture: where relay enqueues
        for func in (self.echo, self.hold, self.fail, self.join, self.relay):
            self.space.task(func)

    def _record(self, name: str, value: object) -> None:
        with self._lock:
            self.calls.append((name, value))

    def echo(self, value: object) -> object:
        self._record("echo", value)
        return value

    def hold(self, value: object) -> object:
        self._record("hold", value)
        self.started.set()
        assert self.release.wait(WAIT)
        return value

    def fail(self, value: object) -> object:
        self._record("fail", value)
        raise ConnectionError(value)

    def join(self, *values: object) -> str:
        self._record("join", values)
        return "+".join(map(str, values))

    def relay(self, value: object) -> object:
        """Return the Deferred of an echo scheduled a minute from now."""
        self._record("relay", value)
        return Task(self.queue.cx.echo, delay=60)(value)

    def ran(self, name: str) -> list[object]:
        with self._lock:
            return [value for called, value in self.calls if called == name]


@pytest.fixture
def calls(url):
    broker = get_broker(url)
    calls = Calls()
    calls.queue = broker.queue()
    broker.expose(calls.space)
    yield broker, calls
    calls.release.set()


def _cancelled(result) -> TaskCancelled:
    """The TaskCancelled ``result`` resolved to (it must have, at once)."""
    assert result.wait(WAIT)
    with pytest.raises(TaskCancelled) as info:
        value_of(result)
    failure = info.value
    assert (failure.task_id, failure.task_name, failure.error) == (result.id, result.name,
                                                                   CANCELLED_ERROR)
    return failure


# -- waiting tasks ------------------------------------------------------------------


def test_a_queued_task_is_removed_and_never_runs(url, calls):
    broker, recorded = calls
    q = broker.queue()
    gone, kept = q.cx.echo("gone"), q.cx.echo("kept")
    assert gone.status == ENQUEUED
    assert len(q) == 2
    assert gone.cancel() is True
    assert len(q) == 1
    failure = _cancelled(gone)
    assert isinstance(failure, TaskFailure) and not failure.retryable
    assert gone.status == "failed"
    with thread_worker(broker):
        assert kept.wait(WAIT) and kept.value == "kept"
    assert recorded.ran("echo") == ["kept"]


def test_a_scheduled_task_is_removed(url, calls):
    broker, recorded = calls
    q = broker.queue()
    later = Task(q.cx.echo, delay=60)("later")
    assert later.status == SCHEDULED
    assert broker.taskqueue.scheduled_size() == 1
    assert later.cancel() is True
    assert broker.taskqueue.scheduled_size() == 0
    _cancelled(later)
    soon = Task(q.cx.echo, delay=0.05)("soon")
    with thread_worker(broker):
        assert soon.wait(WAIT) and soon.value == "soon"
    assert recorded.ran("echo") == ["soon"]


def test_a_pending_task_is_removed_and_never_runs(url, calls):
    broker, recorded = calls
    q = broker.queue()
    arg = q.cx.echo("arg")
    dependent = q.cx.join(arg, "x")
    assert dependent.status == PENDING
    assert dependent.cancel() is True
    _cancelled(dependent)
    with thread_worker(broker):
        assert arg.wait(WAIT) and arg.value == "arg"
        marker = q.cx.echo("after")  # runs after whatever the arrival could have queued
        assert marker.wait(WAIT)
    assert recorded.ran("join") == []


@pytest.mark.parametrize("on_error", [Task.FAIL, Task.PASS])
def test_dependents_of_a_cancelled_task_follow_on_error(url, calls, on_error):
    broker, recorded = calls
    q = broker.queue()
    arg = q.cx.echo("arg")
    dependent = Task(q.cx.join, on_error=on_error)(arg, "x")
    assert arg.cancel() is True
    with thread_worker(broker):
        assert dependent.wait(WAIT)
    if on_error == Task.FAIL:
        with pytest.raises(TaskCancelled) as info:
            value_of(dependent)
        assert (info.value.task_id, info.value.error) == (arg.id, CANCELLED_ERROR)
        assert recorded.ran("join") == []
    else:
        [(passed, x)] = recorded.ran("join")
        assert isinstance(passed, TaskCancelled) and passed.task_id == arg.id and x == "x"
    assert recorded.ran("echo") == []


def test_a_dependent_enqueued_after_the_cancel_gets_it_too(url, calls):
    broker, _ = calls
    q = broker.queue()
    arg = q.cx.echo("arg")
    assert broker.cancel(arg.id) is True  # the Deferred itself has not read it
    dependent = q.cx.join(arg, "x")
    with thread_worker(broker):
        assert dependent.wait(WAIT)
    with pytest.raises(TaskCancelled):
        value_of(dependent)


def test_a_retry_back_off_is_cancelled_and_no_attempt_follows(url, calls):
    broker, recorded = calls
    q = broker.queue()
    res = Task(q.cx.fail, retry=Retry(max=5, delay=60))("down")
    with thread_worker(broker):
        wait_until(lambda: res.status == SCHEDULED, WAIT)
        assert res.cancel() is True
        _cancelled(res)
    assert recorded.ran("fail") == ["down"]
    assert broker.taskqueue.scheduled_size() == 0


# -- finished, unknown, twice ------------------------------------------------------------


def test_a_finished_task_is_not_cancelled(url, calls):
    broker, _ = calls
    q = broker.queue()
    res = q.cx.echo("done")
    with thread_worker(broker):
        wait_until(lambda: broker.status(res) == COMPLETED, WAIT)
        assert res.cancel() is False  # completed, its result not read yet
        assert res.value == "done"
        assert res.cancel() is False  # read
        assert broker.cancel(res.id) is False


@pytest.mark.parametrize("read", [True, False])
def test_a_deferred_that_follows_another_cancels_that_task(url, calls, read):
    """relay returned the Deferred of a scheduled echo: relay's task is
    finished, so cancelling its Deferred cancels the echo it follows — also
    when the Deferred was never read (cancel() itself finds the Deferred
    relay returned)."""
    broker, recorded = calls
    res = broker.queue().cx.relay("later")
    with thread_worker(broker):
        if read:
            wait_until(lambda: not res.wait(0) and res.status == SCHEDULED, WAIT)
        else:
            wait_until(lambda: broker.taskqueue.get_status(res.id) == COMPLETED, WAIT)
        assert broker.cancel(res.id) is False  # relay itself has finished
        assert res.cancel() is True
        assert res.wait(WAIT)
    with pytest.raises(TaskCancelled) as info:
        value_of(res)
    assert info.value.task_id != res.id and info.value.task_name == "cx.echo"
    assert recorded.ran("echo") == []


def test_unknown_ids_and_second_cancels_return_false(url, calls):
    broker, _ = calls
    assert broker.cancel("no-such-task") is False
    res = broker.queue().cx.echo(1)
    assert res.cancel() is True
    assert res.cancel() is False
    assert broker.cancel(res.id) is False


def test_another_broker_cancels(url, calls):
    """The canceller needs only the id and the URL (a Deferred pickled into
    another broker, or ``Broker.cancel``): here a second broker object."""
    broker, recorded = calls
    q = broker.queue()
    first, second = q.cx.echo(1), q.cx.echo(2)
    other = get_broker(url)
    try:
        assert other.cancel(first.id) is True
        if not url.startswith("memory:"):  # a memory:// Deferred stays in its process
            copy = pickle.loads(pickle.dumps(second))
            assert copy.cancel() is True
        else:
            assert other.cancel(second.id) is True
    finally:
        other.close()
    _cancelled(first)
    _cancelled(second)


def test_an_ignore_result_task_is_cancelled_by_id_and_its_id_is_free(url, calls):
    broker, recorded = calls
    q = broker.queue()
    assert Task(q.cx.echo, id="fire", ignore_result=True)("x") is None
    assert broker.cancel("fire") is True
    assert broker.taskqueue.get_status("fire") is None  # forgotten at once
    Task(q.cx.echo, id="fire", ignore_result=True)("y")  # no DuplicateTask
    with thread_worker(broker):
        marker = q.cx.echo("after")
        assert marker.wait(WAIT)
    assert sorted(map(str, recorded.ran("echo"))) == ["after", "y"]


def test_a_running_ignore_result_task_is_unknown(url, calls):
    """It left the queue when a worker took it: nothing to cancel."""
    broker, recorded = calls
    Task(broker.queue().cx.hold, id="fire", ignore_result=True)("x")
    with thread_worker(broker):
        assert recorded.started.wait(WAIT)
        assert broker.cancel("fire") is False
        recorded.release.set()


# -- running tasks in a thread pool ----------------------------------------------------------


def test_a_running_task_in_a_thread_pool_fails_as_cancelled_and_its_late_result_is_dropped(
        url, calls):
    """A thread cannot be killed: the task runs on, but the outcome is the
    cancel, at once, and stays so when the thread's result comes."""
    broker, recorded = calls
    q = broker.queue()
    res = q.cx.hold("late")
    with thread_worker(broker):
        assert recorded.started.wait(WAIT)
        assert res.status == PROCESSING
        assert res.cancel() is True
        _cancelled(res)  # before the thread finished
        recorded.release.set()
        after = q.cx.echo("after")  # the one thread is free again once hold returned
        assert after.wait(WAIT) and after.value == "after"
    _cancelled(res)
    assert broker.cancel(res.id) is False


def test_cancel_racing_with_completion_has_exactly_one_outcome(url, calls):
    """Many cancels, each racing with its task's completion: True exactly
    when the outcome is the cancel, False exactly when it is the result."""
    broker, _ = calls
    q = broker.queue()
    outcomes = {"cancelled": 0, "result": 0}
    with thread_worker(broker, workers=2):
        for i in range(60):
            res = q.cx.echo(i)
            if i % 3:  # let some of them start first
                wait_until(lambda res=res: broker.status(res) != ENQUEUED, WAIT, interval=0.0005)
            cancelled = res.cancel()
            assert res.wait(WAIT)
            if cancelled:
                _cancelled(res)
                outcomes["cancelled"] += 1
            else:
                assert res.value == i
                outcomes["result"] += 1
            assert res.cancel() is False
    assert sum(outcomes.values()) == 60



# -- running tasks in a process pool (every backend, Redis Cluster included) ------------------


def test_a_running_task_in_a_process_pool_is_killed(url, tmp_path):
    """The consumer's watcher hears of the cancel from the backend (on a
    cluster, from the node of the queue's slot) and kills the worker; the
    pool's one worker is free again (the task would wait 60 s)."""
    broker = get_broker(url)
    broker.expose(worker_tasks.ts)
    pool = poolx.Pool(1, context=CONTEXT)
    consumer = BrokerConsumer(pool, broker, timeout=0.1)
    try:
        consumer.start()
        q = broker.queue()
        res = q.wt.touch_and_wait(str(tmp_path), "run", 60)
        pid = started_pid(tmp_path, "run")
        assert get_broker(url).cancel(res.id) is True
        _cancelled(res)
        wait_until(lambda: not psutil.pid_exists(pid), WAIT)
        after = q.wt.getpid()
        assert after.wait(WAIT) and after.value != pid
    finally:
        consumer.stop(join=False)
        pool.terminate()
        assert consumer.join(WAIT)


def test_a_running_task_whose_cancelled_outcome_was_read_is_still_reported(url, calls):
    """The canceller reads the cancelled outcome (which frees the id) before
    the consumer's watcher looks: the consumer still holds the cancelled
    delivery and must still be told to stop it (on a cluster the watcher is
    often the slower one)."""
    broker, _ = calls
    queue = broker.taskqueue
    res = broker.queue().cx.echo(1)
    task_id, _message = queue.get(WAIT)
    assert task_id == res.id
    assert get_broker(url).cancel(res.id) is True
    _cancelled(res)  # read before the watcher's look
    assert broker.cancelled_tasks([res.id], WAIT) == [res.id]


# -- a cancel stops only the delivery it was meant for ---------------------------------


@pytest.mark.parametrize("ended", ["answered", "given back"])
def test_a_task_enqueued_again_under_a_cancelled_id_is_not_reported_cancelled(url, calls, ended):
    """Cancel a running task, let its delivery end (answered, as a consumer
    does after the kill; or given back, as a stopping consumer or a retry
    does), read its cancelled outcome and enqueue a new task under the same
    id ("cancel and start again"): the consumer that runs the new one must
    not be told to kill it."""
    broker, _ = calls
    queue = broker.taskqueue
    q = broker.queue()
    old = Task(q.cx.echo, id="restartable")(1)
    task_id, message = queue.get(WAIT)
    assert task_id == old.id
    assert get_broker(url).cancel(old.id) is True
    if ended == "answered":
        assert broker.cancelled_tasks([old.id], WAIT) == [old.id]
        queue.set_result(old.id, message, WAIT)
    else:  # given back before the consumer heard of the cancel
        assert queue.requeue_task(old.id, message) is False
    assert broker.cancelled_tasks([], 0.01) == []  # the watcher looks on (other tasks run)
    _cancelled(old)  # read: the id is free again
    new = Task(q.cx.echo, id="restartable")(2)
    assert queue.get(WAIT)[0] == new.id
    assert broker.cancelled_tasks([new.id], 0.2) == []
    assert new.status == PROCESSING

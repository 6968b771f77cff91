"""Retries with back-off and delayed tasks (poolx, beyond WorQ), checked on
every backend URL (``memory://``, ``redis://``, ``redis+cluster://``) through
a thread WorkerPool.

Timing assertions follow one rule: *never before* the due time is exact
(every run is compared with the time the producer called), *after* it only
within a generous bound (a loaded CI machine), and order is asserted rather
than intervals.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from poolx import Task, TaskSpace, get_broker
from poolx.const import SCHEDULED
from poolx.task import Retry, TaskExpired, TaskFailure, wait_all
from tests.conftest import wait_until

from .helpers import WAIT, thread_worker, value_of

LATE = 2.0
"""How late after its due time a task may run here (the promise is 50 ms on
an idle pool; this bound only has to hold on a loaded CI machine)."""


class Runs:
    """Task callables that record when (monotonic) each call ran, and fail
    on demand."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self._cond = threading.Condition()
        self.space = TaskSpace("rd")
        self.space.task(self.stamp)
        self.space.task(self.flaky)
        self.space.task(self.join)
        self.space.task(self.grab)
        self.seen: dict[str, list[list[int]]] = {}

    def _record(self, key: str) -> int:
        with self._cond:
            self.times.setdefault(key, []).append(time.monotonic())
            self._cond.notify_all()
            return len(self.times[key])

    def stamp(self, key: str) -> str:
        self._record(key)
        return key

    def flaky(self, key: str, failures: int, error: str = "ConnectionError") -> str:
        """Fail the first ``failures`` calls for ``key`` with ``error``."""
        if self._record(key) <= failures:
            raise {"ConnectionError": ConnectionError, "ValueError": ValueError}[error](key)
        return f"{key} ok"

    def join(self, *values: object) -> str:
        return "+".join(map(str, values))

    def grab(self, key: str, items: list[int]) -> list[int]:
        """Record what this attempt got, then take an item and fail (the
        first two calls): each attempt must get the list as delivered."""
        got = list(items)
        with self._cond:
            self.seen.setdefault(key, []).append(got)
        if self._record(key) <= 2:
            items.pop()
            raise ConnectionError(key)
        return got

    def wait_for(self, key: str, count: int) -> list[float]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.times.get(key, ())) >= count, WAIT)
            return list(self.times[key])


@pytest.fixture
def runs(url):
    broker = get_broker(url)
    runs = Runs()
    broker.expose(runs.space)
    with thread_worker(broker, workers=2):
        yield runs


def _worker_blocked(store) -> bool:
    """Is a consumer blocked waiting for a task (after the wake-up for the
    last task scheduled, if any)?"""
    client = getattr(store, "client", None)
    if client is None:  # memory://: a getter waits on the queue's condition
        with store._lock:
            return bool(store._task_ready._waiters)
    if client.exists(store._key + "bell"):
        return False
    kw = {}
    if hasattr(client, "get_node_from_key"):  # a cluster: the node of the queue's slot
        kw["target_nodes"] = client.get_node_from_key(store._key + "ready")
    clients = client.client_list(**kw)
    return any(c.get("cmd") == "blmove" and "b" in c.get("flags", "") for c in clients)


def _queue(url):
    return get_broker(url).queue()


def test_every_attempt_gets_the_arguments_as_delivered(url, runs):
    """An attempt that changes its arguments (a thread pool runs it on the
    very objects) does not pass the change on to the next attempt (they saw
    [1, 2, 3], [1, 2], [1])."""
    res = Task(_queue(url).rd.grab, retry=Retry(max=2, delay=0.01))("g", [1, 2, 3])
    assert res.wait(WAIT) and res.value == [1, 2, 3]
    assert runs.seen["g"] == [[1, 2, 3], [1, 2, 3], [1, 2, 3]]


# -- delayed tasks --------------------------------------------------------------


def test_delayed_task_is_scheduled_and_never_runs_before_its_delay(url, runs):
    q = _queue(url)
    start = time.monotonic()
    res = Task(q.rd.stamp, delay=0.4)("a")
    assert res.status == SCHEDULED
    assert not res.wait(0.1)  # not due yet
    assert res.status == SCHEDULED
    assert res.wait(WAIT) and res.value == "a"
    [ran] = runs.wait_for("a", 1)
    assert start + 0.4 <= ran < start + 0.4 + LATE


def test_eta_is_an_aware_datetime(url, runs):
    q = _queue(url)
    start = time.monotonic()
    eta = datetime.now(timezone.utc) + timedelta(seconds=0.3)
    res = Task(q.rd.stamp, eta=eta)("eta")
    assert res.wait(WAIT) and res.value == "eta"
    assert start + 0.3 - 0.005 <= runs.wait_for("eta", 1)[0] < start + 0.3 + LATE
    # an eta in the past runs at once
    past = Task(q.rd.stamp, eta=datetime.now(timezone.utc) - timedelta(hours=1))("past")
    assert past.wait(WAIT) and past.value == "past"


@pytest.mark.parametrize("options, error, match", [
    ({"eta": datetime(2030, 1, 1)}, ValueError, "naive"),
    ({"eta": "2030-01-01T00:00:00Z"}, ValueError, "invalid eta"),
    ({"eta": datetime(2030, 1, 1, tzinfo=timezone.utc), "delay": 1}, ValueError, "not both"),
    ({"delay": -1}, ValueError, "invalid delay"),
    ({"delay": "1"}, ValueError, "invalid delay"),
    ({"retry": 3}, ValueError, "invalid retry"),
])
def test_invalid_delay_eta_and_retry_options(url, options, error, match):
    with pytest.raises(error, match=match):
        Task(_queue(url).rd.stamp, **options)


def test_delayed_tasks_run_in_due_order(url, runs):
    q = _queue(url)
    results = [Task(q.rd.stamp, delay=delay)(key)
               for key, delay in (("late", 0.6), ("early", 0.2), ("middle", 0.4))]
    assert wait_all(results, WAIT)
    order = sorted(("late", "early", "middle"), key=lambda key: runs.wait_for(key, 1)[0])
    assert order == ["early", "middle", "late"]


def test_a_task_due_before_every_other_wakes_the_blocked_consumer(url):
    broker = get_broker(url)
    runs = Runs()
    broker.expose(runs.space)
    q = broker.queue()
    # Workers that block in the backend for up to 60 s per call: only a
    # wake-up from the backend can make them run "soon" in time.
    with thread_worker(broker, workers=1, timeout=60):
        Task(q.rd.stamp, delay=30)("far")  # the idle consumer waits for this one
        assert not runs.times
        wait_until(lambda: _worker_blocked(broker.taskqueue))
        start = time.monotonic()
        soon = Task(q.rd.stamp, delay=0.2)("soon")
        assert soon.wait(WAIT) and soon.value == "soon"
        assert start + 0.2 <= runs.wait_for("soon", 1)[0] < start + 0.2 + LATE
        assert "far" not in runs.times


def test_scheduled_tasks_are_counted_apart_and_discarded_with_the_queue(url):
    broker = get_broker(url)
    q = broker.queue()
    ready = q.rd.stamp("now")
    later = [Task(q.rd.stamp, delay=60)(f"later{i}") for i in range(3)]
    assert len(q) == 1
    assert broker.taskqueue.scheduled_size() == 3
    assert later[0].status == SCHEDULED
    del q[:]
    assert broker.taskqueue.scheduled_size() == 0 and len(q) == 0
    for res in [ready, *later]:
        assert res.wait(WAIT)
        with pytest.raises(TaskExpired):
            value_of(res)


def test_delayed_task_with_deferred_arguments_waits_for_both(url, runs):
    q = _queue(url)
    start = time.monotonic()
    arg = q.rd.stamp("arg")
    res = Task(q.rd.join, delay=0.4)(arg, "x")
    assert res.wait(WAIT) and res.value == "arg+x"
    assert runs.wait_for("arg", 1)[0] < start + 0.4  # the argument did not wait
    assert res.status == "success"


def test_delayed_ignore_result_task_runs(url, runs):
    start = time.monotonic()
    assert Task(_queue(url).rd.stamp, delay=0.2, ignore_result=True)("fire") is None
    assert start + 0.2 <= runs.wait_for("fire", 1)[0] < start + 0.2 + LATE


def test_delay_from_queue_default_options(url, runs):
    q = get_broker(url).queue(delay=0.2)
    start = time.monotonic()
    res = q.rd.stamp("default")
    assert res.wait(WAIT)
    assert runs.wait_for("default", 1)[0] >= start + 0.2


# -- retries ----------------------------------------------------------------------


def test_retry_after_backoff_until_success(url, runs):
    q = _queue(url)
    retry = Retry(max=3, delay=0.1, backoff=2.0, jitter=False, on=(ConnectionError,))
    res = Task(q.rd.flaky, retry=retry)("twice", 2)
    assert res.wait(WAIT) and res.value == "twice ok"
    first, second, third = runs.wait_for("twice", 3)
    assert second - first >= 0.1 and third - second >= 0.2  # delay * backoff ** n
    assert len(runs.times["twice"]) == 3


def test_retries_used_up_final_failure_says_how_many_attempts_ran(url, runs):
    q = _queue(url)
    res = Task(q.rd.flaky, retry=Retry(max=2, delay=0.05, jitter=False))("always", 99)
    assert res.wait(WAIT)
    with pytest.raises(TaskFailure) as info:
        value_of(res)
    assert info.value.attempts == 3
    assert info.value.error == "ConnectionError: always (3 attempts)"
    assert not info.value.retryable
    assert len(runs.times["always"]) == 3


def test_an_error_the_policy_does_not_name_is_not_retried(url, runs):
    q = _queue(url)
    res = Task(q.rd.flaky, retry=Retry(max=3, delay=0.05, on=ConnectionError))(
        "other", 1, "ValueError")
    assert res.wait(WAIT)
    with pytest.raises(TaskFailure) as info:
        value_of(res)
    assert info.value.attempts == 1 and info.value.error == "ValueError: other (1 attempt)"
    assert len(runs.times["other"]) == 1


def test_retry_frees_the_worker_and_is_scheduled_meanwhile(url):
    broker = get_broker(url)
    runs = Runs()
    broker.expose(runs.space)
    q = broker.queue()
    with thread_worker(broker, workers=1):
        res = Task(q.rd.flaky, retry=Retry(max=1, delay=1.0, jitter=False))("slow", 1)
        runs.wait_for("slow", 1)
        other = q.rd.stamp("meanwhile")  # the only worker is free during the back-off
        assert other.wait(WAIT)
        assert res.status == SCHEDULED
        assert runs.times["meanwhile"][0] < runs.times["slow"][0] + 1.0
        assert res.wait(WAIT) and res.value == "slow ok"


def test_dependents_wait_for_the_final_outcome(url, runs):
    q = _queue(url)
    retry = Retry(max=2, delay=0.05, jitter=False)
    good = Task(q.rd.flaky, retry=retry)("dep-good", 2)
    bad = Task(q.rd.flaky, retry=retry)("dep-bad", 99)
    after_good = q.rd.join(good, "then")
    after_bad = q.rd.join(bad, "then")
    assert wait_all([after_good, after_bad], WAIT)
    assert after_good.value == "dep-good ok+then"
    with pytest.raises(TaskFailure) as info:
        value_of(after_bad)
    assert info.value.task_id == bad.id and info.value.attempts == 3


def test_retry_of_an_ignore_result_task(url, runs):
    q = _queue(url)
    Task(q.rd.flaky, retry=Retry(max=2, delay=0.05), ignore_result=True)("fire-retry", 2)
    assert len(runs.wait_for("fire-retry", 3)) == 3


def test_retry_policy_is_independent_of_max_retries(url, runs):
    q = _queue(url)
    res = Task(q.rd.flaky, retry=Retry(max=2, delay=0.05), max_retries=0)("indep", 2)
    assert res.wait(WAIT) and res.value == "indep ok"


def test_backend_without_scheduling_refuses_clearly():
    from poolx.core import Broker
    from poolx.queue.base import AbstractTaskQueue

    class Plain(AbstractTaskQueue):
        pass

    q = Broker(Plain("plain://")).queue()
    with pytest.raises(NotImplementedError, match="cannot delay tasks"):
        Task(q.f, delay=1)()
    with pytest.raises(NotImplementedError, match="cannot retry tasks"):
        Task(q.f, retry=Retry())()


# -- the Retry policy itself ------------------------------------------------------


def test_retry_countdown_is_delay_times_backoff_power_with_jitter_within_25_percent():
    plain = Retry(delay=0.5, backoff=2.0, jitter=False)
    assert [plain.countdown(n) for n in range(4)] == [0.5, 1.0, 2.0, 4.0]
    jittered = Retry(delay=0.5, backoff=2.0, jitter=True)
    assert jittered.countdown(1, rand=lambda: 0.0) == pytest.approx(0.75)
    assert jittered.countdown(1, rand=lambda: 0.5) == pytest.approx(1.0)
    assert jittered.countdown(1, rand=lambda: 1.0) == pytest.approx(1.25)
    samples = [jittered.countdown(1) for _ in range(1000)]
    assert 0.75 <= min(samples) < 0.85 and 1.15 < max(samples) <= 1.25


def test_retry_covers_errors_by_type_and_limits_only_with_on_timeout():
    from poolx.exceptions import (
        MemoryLimitExceeded,
        SoftTimeLimitExceeded,
        Terminated,
        TimeLimitExceeded,
        WorkerLostError,
    )

    policy = Retry(on=(ConnectionError, "tests.taskqueue.test_retries_and_delays.Custom"))
    assert policy.covers(ConnectionRefusedError())  # a subclass
    assert policy.covers(Custom()) and policy.covers(SubCustom())
    assert not policy.covers(ValueError())
    assert Retry().covers(ValueError())  # default: any Exception
    assert not Retry().covers(KeyboardInterrupt())
    limits = [SoftTimeLimitExceeded(), TimeLimitExceeded(1.0), MemoryLimitExceeded(2, 1, 0),
              WorkerLostError("lost")]
    assert not any(Retry().covers(error) for error in limits)
    assert all(Retry(on_timeout=True).covers(error) for error in limits)
    assert not Retry(on_timeout=True).covers(Terminated(15))  # terminated on request: never


class Custom(Exception):
    pass


class SubCustom(Custom):
    pass


@pytest.mark.parametrize("kw, error", [
    ({"max": -1}, ValueError), ({"max": 1.5}, TypeError), ({"delay": -1}, ValueError),
    ({"backoff": 0}, ValueError), ({"jitter": 1}, TypeError), ({"on_timeout": "yes"}, TypeError),
    ({"on": ()}, ValueError), ({"on": (int,)}, TypeError), ({"on": "NoDots"}, TypeError),
    ({"on": (KeyboardInterrupt,)}, TypeError),
])
def test_invalid_retry_policies(kw, error):
    with pytest.raises(error):
        Retry(**kw)


def test_retry_travels_as_plain_data(url):
    policy = Retry(max=2, delay=0.25, backoff=3, jitter=False, on=ConnectionError)
    task = Task(_queue(url).rd.stamp, retry=policy)
    assert task.options == {"retry": {"max": 2, "delay": 0.25, "backoff": 3.0, "jitter": False,
                                      "on": ["builtins.ConnectionError"], "on_timeout": False}}
    assert task.retry == policy == Retry.from_dict(policy.to_dict())
    assert task.with_options(task.options).retry == policy
    assert Task(_queue(url).rd.stamp).retry is None
    delayed = Task(_queue(url).rd.stamp, delay=2.5, retry=policy)
    assert delayed.with_options(delayed.options).delay == 2.5  # delay carries over (it was dropped)
    assert delayed.with_options({"delay": 1}).delay == 1
    assert "ConnectionError" in repr(policy)


def test_json_keeps_the_attempts_of_a_failure():
    from poolx.serialization import JSONSerializer

    failure = TaskFailure("f", "q", "id", "ConnectionError: x (3 attempts)")
    failure.attempts = 3
    copy = JSONSerializer().loads(JSONSerializer().dumps(failure))
    assert copy == failure and copy.attempts == 3 and not copy.retryable
    plain = JSONSerializer().loads(JSONSerializer().dumps(TaskFailure("f", "q", "id", "E: x")))
    assert plain.attempts is None


def test_a_late_result_for_a_task_waiting_to_be_retried_completes_it(url):
    from poolx.task import Deferred, FunctionTask

    broker = get_broker(url)
    queue = broker.taskqueue
    res = Deferred(broker, FunctionTask("rd.stamp", (), {}, {"id": "late"}))
    assert queue.enqueue_task(res, b"m")
    assert queue.get(WAIT)[0] == "late"
    assert queue.retry_task("late", b"m2", 0.05)
    assert queue.get_status("late") == SCHEDULED and queue.scheduled_size() == 1
    queue.set_result("late", b"result", WAIT)  # e.g. a delivery thought lost, finishing late
    assert queue.get_status("late") == "completed" and queue.scheduled_size() == 0
    assert queue.get(0.2) is None  # not run again
    assert queue.pop_result("late", 0) == b"result"

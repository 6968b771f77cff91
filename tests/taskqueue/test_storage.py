"""The AbstractTaskQueue contract, checked directly on each backend URL."""

from __future__ import annotations

import threading
import time

from poolx import get_broker
from poolx.const import COMPLETED, ENQUEUED, PENDING, PROCESSING, TASK_EXPIRED
from poolx.task import Deferred, FunctionTask

from .helpers import WAIT


def _deferred(broker, task_id, ignore_result=False, name="t"):
    options = {"id": task_id, "ignore_result": ignore_result}
    return Deferred(broker, FunctionTask(name, (), {}, options))


def test_enqueue_get_result_cycle(url):
    broker = get_broker(url)
    queue = broker.taskqueue
    assert queue.get(0) is None
    assert queue.enqueue_task(_deferred(broker, "a"), b"msg-a")
    assert not queue.enqueue_task(_deferred(broker, "a"), b"again")
    assert queue.size() == 1
    assert queue.get_status("a") == ENQUEUED
    assert queue.get(WAIT) == ("a", b"msg-a")
    assert queue.size() == 0
    assert queue.get_status("a") == PROCESSING
    assert queue.pop_result("a", 0) is None
    assert queue.set_result("a", b"result", WAIT) == []
    assert queue.get_status("a") == COMPLETED
    assert queue.set_result("a", b"second result is dropped", WAIT) == []
    assert queue.pop_result("a", 0) == b"result"
    assert queue.pop_result("a", 0) is TASK_EXPIRED  # read once
    assert queue.get_status("a") is None


def test_get_blocks_until_a_task_is_enqueued(url):
    broker = get_broker(url)
    queue = broker.taskqueue
    got = []
    taker = threading.Thread(target=lambda: got.append(queue.get(WAIT)))
    taker.start()
    queue.enqueue_task(_deferred(broker, "x"), b"m")
    taker.join(WAIT)
    assert got == [("x", b"m")]


def test_deferred_task_lifecycle_and_fan_out(url):
    broker = get_broker(url)
    queue = broker.taskqueue
    queue.enqueue_task(_deferred(broker, "arg"), b"arg-task")
    for dep in ("d1", "d2"):
        assert queue.defer_task(_deferred(broker, dep), b"dep", ["arg", "local"])
        assert queue.get_status(dep) == PENDING
        assert queue.reserve_argument("arg", dep) == (True, None)
        assert queue.set_argument(dep, "local", b"L") is False  # "arg" still missing
        assert queue.set_argument(dep, "local", b"L") is False  # already set
    assert not queue.defer_task(_deferred(broker, "d1"), b"dup", ["arg"])
    assert queue.size() == 3
    assert queue.get(WAIT)[0] == "arg"
    assert sorted(queue.set_result("arg", b"R", WAIT)) == ["d1", "d2"]
    assert {queue.get(WAIT)[0], queue.get(WAIT)[0]} == {"d1", "d2"}
    assert queue.get_arguments("d1") == {"arg": b"R", "local": b"L"}
    # a late reservation gets the stored result directly
    assert queue.defer_task(_deferred(broker, "d3"), b"dep", ["arg"])
    assert queue.reserve_argument("arg", "d3") == (True, b"R")
    assert queue.set_argument("d3", "arg", b"R") is True
    queue.undefer_task("d3")
    queue.undefer_task("d3")  # idempotent
    assert queue.get(WAIT)[0] == "d3"
    assert queue.get(0) is None
    assert queue.reserve_argument("unknown", "d4") == (False, None)


def test_discard_result_reaches_waiters_and_dependents(url):
    broker = get_broker(url)
    queue = broker.taskqueue
    queue.enqueue_task(_deferred(broker, "a"), b"m")
    queue.defer_task(_deferred(broker, "b"), b"m", ["a"])
    queue.reserve_argument("a", "b")
    queue.get(WAIT)
    queue.discard_result("a", b"TOKEN")
    assert queue.pop_result("a", 0) is TASK_EXPIRED
    assert queue.get(WAIT)[0] == "b"
    assert queue.get_arguments("b") == {"a": b"TOKEN"}
    assert queue.set_result("a", b"too late", WAIT) == []
    queue.discard_result("never-existed", b"TOKEN")


def test_discard_pending_wakes_waiters(url):
    broker = get_broker(url)
    queue = broker.taskqueue
    queue.enqueue_task(_deferred(broker, "a"), b"m")
    queue.enqueue_task(_deferred(broker, "running"), b"m")
    queue.defer_task(_deferred(broker, "b"), b"m", ["a"])
    assert queue.get(WAIT)[0] == "a"
    queue.enqueue_task(_deferred(broker, "c"), b"m")
    got = []
    waiter = threading.Thread(target=lambda: got.append(queue.pop_result("c", WAIT)))
    waiter.start()
    queue.discard_pending()
    waiter.join(WAIT)
    assert got == [TASK_EXPIRED]
    assert queue.size() == 0
    assert queue.get(0) is None
    assert queue.get_status("a") == PROCESSING  # running tasks are untouched
    assert queue.get_status("b") is None
    assert queue.set_result("a", b"r", WAIT) == []  # its dependent was discarded


def test_ignore_result_task_leaves_the_store_when_taken(url):
    broker = get_broker(url)
    queue = broker.taskqueue
    queue.enqueue_task(_deferred(broker, "a"), b"m")
    queue.defer_task(_deferred(broker, "fire", ignore_result=True), b"m", ["a"])
    queue.reserve_argument("a", "fire")
    queue.get(WAIT)
    assert queue.set_result("a", b"R", WAIT) == ["fire"]
    assert queue.get(WAIT) == ("fire", b"m")
    assert queue.get_status("fire") is None
    assert queue.enqueue_task(_deferred(broker, "fire", ignore_result=True), b"m2")
    assert queue.get_arguments("fire") == {"a": b"R"}  # still readable once taken


def test_queued_tasks_lists_the_next_tasks_to_run(url):
    broker = get_broker(url)
    queue = broker.taskqueue
    assert queue.queued_tasks(10) == []
    before = time.time()
    queue.enqueue_task(_deferred(broker, "a", name="mod.first"), b"m")
    with queue.batch():
        for task_id in "bcd":
            queue.enqueue_task(_deferred(broker, task_id, name=f"mod.{task_id}"), b"m")
    queue.defer_task(_deferred(broker, "p", name="mod.pending"), b"m", ["a"])
    after = time.time()
    listed = queue.queued_tasks(3)
    assert [(task.task_id, task.name) for task in listed] == [
        ("a", "mod.first"), ("b", "mod.b"), ("c", "mod.c")
    ]
    for task in listed:  # on this machine's clock, whatever the server's
        assert before - 0.5 <= task.enqueued_at <= after + 0.5
    assert [task.task_id for task in queue.queued_tasks(10)] == list("abcd")  # not "p": pending
    assert queue.queued_tasks(0) == []
    assert queue.get(WAIT)[0] == "a"
    assert [task.task_id for task in queue.queued_tasks(10)] == list("bcd")
    assert queue.requeue_task("a", b"m")  # given back: runs next, keeps its name and age
    [again] = queue.queued_tasks(1)
    assert again[:2] == ("a", "mod.first")
    assert abs(again.enqueued_at - listed[0].enqueued_at) < 0.25
    queue.discard_result("c", b"TOKEN")
    assert [task.task_id for task in queue.queued_tasks(10)] == list("abd")
    assert queue.reserve_argument("a", "p") == (True, None)
    queue.get(WAIT)
    queue.set_result("a", b"R", WAIT)  # "p" becomes ready
    assert [(task.task_id, task.name) for task in queue.queued_tasks(10)] == [
        ("b", "mod.b"), ("d", "mod.d"), ("p", "mod.pending")
    ]
    queue.discard_pending()
    assert queue.queued_tasks(10) == []

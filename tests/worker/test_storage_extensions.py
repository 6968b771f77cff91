"""The storage contract's additions for worker pools, on memory://:
requeue_task and the pool registry."""

from __future__ import annotations

import json

import pytest

from poolx import Task, get_queue
from poolx.core import get_broker
from tests.conftest import wait_until


def _take(broker):
    task = broker.next_task(timeout=1)
    assert task is not None
    message, args = broker.serialize(task, deferred=True)
    assert args == {}
    return task, message


def test_requeue_puts_a_taken_task_back_in_front(url):
    broker = get_broker(url)
    q = get_queue(url)
    first, second = q.func(1), q.func(2)
    task, message = _take(broker)
    assert first.status == "processing"
    assert broker.taskqueue.requeue_task(task.id, message, task.ignore_result)
    assert first.status == "enqueued"
    assert len(broker) == 2
    again = broker.next_task(timeout=1)
    assert (again.id, again.args) == (first.id, (1,))
    assert broker.next_task(timeout=1).id == second.id


def test_requeue_after_resolving_deferred_arguments(url):
    broker = get_broker(url)
    q = get_queue(url)
    arg = q.num(3)
    dependent = q.add([arg])
    broker.set_result(broker.next_task(timeout=1), 3)
    task, message = _take(broker)
    assert task.id == dependent.id and task.args == ([3],)
    assert broker.taskqueue.requeue_task(task.id, message)
    again = broker.next_task(timeout=1)
    assert again.args == ([3],)
    broker.set_result(again, 3)
    assert dependent.wait(1) and dependent.value == 3


def test_requeue_an_ignore_result_task(url):
    broker = get_broker(url)
    Task(get_queue(url).func, ignore_result=True)(7)
    task, message = _take(broker)
    assert len(broker) == 0
    assert broker.taskqueue.requeue_task(task.id, message, ignore_result=True)
    assert len(broker) == 1
    assert broker.next_task(timeout=1).args == (7,)


def test_requeue_refuses_tasks_that_are_not_processing(url):
    broker = get_broker(url)
    q = get_queue(url)
    res = q.func()
    task, message = _take(broker)
    broker.set_result(task, 1)
    assert not broker.taskqueue.requeue_task(task.id, message)  # completed
    assert res.value == 1
    assert not broker.taskqueue.requeue_task("unknown", message)
    q.other()
    waiting = broker.taskqueue
    pending_id = get_queue(url).more().id
    assert not waiting.requeue_task(pending_id, message)  # still enqueued


def test_requeue_of_a_discarded_task_is_refused(url):
    broker = get_broker(url)
    res = get_queue(url).func()
    task, message = _take(broker)
    broker.task_failed(task)
    assert not broker.taskqueue.requeue_task(task.id, message)
    assert len(broker) == 0
    assert res.wait(0)


def test_pool_registry_upserts_and_unregisters(url):
    queue = get_broker(url).taskqueue
    assert queue.live_pools() == []
    queue.register_pool("a", json.dumps({"n": 1}), 30)
    queue.register_pool("a", json.dumps({"n": 2}), 30)
    queue.register_pool("b", json.dumps({"n": 3}), 30)
    assert sorted(json.loads(info)["n"] for info in queue.live_pools()) == [2, 3]
    queue.unregister_pool("a")
    queue.unregister_pool("missing")
    assert [json.loads(info)["n"] for info in queue.live_pools()] == [3]


def test_pool_registry_spans_queue_names_but_not_stores(url):
    get_broker(url, "one").taskqueue.register_pool("p", "{}", 30)
    assert get_broker(url, "two").taskqueue.live_pools() == ["{}"]
    assert get_broker(url + "-elsewhere").taskqueue.live_pools() == []


def test_pool_registry_entries_expire(url):
    queue = get_broker(url).taskqueue
    queue.register_pool("short", "{}", 0.05)
    queue.register_pool("long", '{"long": 1}', 30)
    wait_until(lambda: queue.live_pools() == ['{"long": 1}'], 5)


def test_pool_registry_rejects_bad_ttl(url):
    with pytest.raises(ValueError):
        get_broker(url).taskqueue.register_pool("p", "{}", 0)

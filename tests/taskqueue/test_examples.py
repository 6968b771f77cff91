"""WorQ's documented examples, with only the imports changed, on every URL."""

from __future__ import annotations

import threading
from operator import add

import pytest

import poolx.const as const
from poolx import Task, TaskFailure, TaskSpace, get_broker, get_queue

from .helpers import WAIT, Collector, Gate, thread_worker, value_of


def test_simple(url):
    state = Collector()

    def func(arg):
        state.add(arg)

    broker = get_broker(url)
    broker.expose(func)
    with thread_worker(broker):
        q = get_queue(url)
        q.func("arg")
        assert state.wait_for(1) == ["arg"]


def test_wait_for_result(url):
    def func(arg):
        return arg

    broker = get_broker(url)
    broker.expose(func)
    with thread_worker(broker):
        q = get_queue(url)
        res = q.func("arg")
        assert res.wait(WAIT), repr(res)
        assert res.value == "arg"
        assert repr(res) == f"<Deferred func [default:{res.id}] success>"


def test_ignore_result(url):
    state = Collector()

    def func(arg):
        state.add(arg)

    broker = get_broker(url)
    broker.expose(func)
    with thread_worker(broker):
        q = get_queue(url)
        f = Task(q.func, ignore_result=True)
        res = f(3)
        assert res is None
        assert state.wait_for(1) == [3]


def test_result_status(url):
    started = threading.Event()
    proceed = threading.Event()

    def func(arg):
        started.set()
        assert proceed.wait(WAIT)
        return arg

    broker = get_broker(url)
    broker.expose(func)
    gate = Gate()
    with thread_worker(broker, gate):
        q = get_queue(url)
        res = q.func("arg")

        assert res.status == const.ENQUEUED
        assert repr(res) == f"<Deferred func [default:{res.id}] enqueued>"

        gate.release()
        assert started.wait(WAIT)
        assert res.status == const.PROCESSING
        assert repr(res) == f"<Deferred func [default:{res.id}] processing>"

        proceed.set()
        assert res.wait(WAIT), repr(res)
        assert repr(res) == f"<Deferred func [default:{res.id}] success>"
        assert res.value == "arg"


def test_no_such_task(url):
    broker = get_broker(url)
    with thread_worker(broker):
        q = get_queue(url)
        res = q.func("arg")
        assert res.wait(WAIT), repr(res)
        assert repr(res) == f"<Deferred func [default:{res.id}] failed>"
        with pytest.raises(TaskFailure) as info:
            value_of(res)
        assert str(info.value) == f"func [default:{res.id}] no such task"


def test_task_error(url):
    def func(arg):
        raise Exception("fail!")

    broker = get_broker(url)
    broker.expose(func)
    with thread_worker(broker):
        q = get_queue(url)
        res = q.func("arg")
        assert res.wait(WAIT), repr(res)
        assert repr(res) == f"<Deferred func [default:{res.id}] failed>"
        with pytest.raises(TaskFailure) as info:
            value_of(res)
        assert str(info.value) == f"func [default:{res.id}] Exception: fail!"


def test_task_with_deferred_arguments(url):
    def func(arg):
        return arg

    broker = get_broker(url)
    broker.expose(func)
    broker.expose(sum)
    with thread_worker(broker):
        q = get_queue(url)
        res = q.sum([q.func(1), q.func(2), q.func(3)])
        assert res.wait(WAIT), repr(res)
        assert res.value == 6


def test_deferred_arguments_at_any_depth(url):
    def show(*args, **kw):
        return args, kw

    def func(arg):
        return arg

    broker = get_broker(url)
    broker.expose(func)
    broker.expose(show)
    with thread_worker(broker):
        q = get_queue(url)
        res = q.show(q.func(1), [{"a": (q.func(2),)}], key={"deep": [q.func(3)]})
        assert res.wait(WAIT), repr(res)
        assert res.value == ((1, [{"a": (2,)}]), {"key": {"deep": [3]}})


def test_more_deferred_arguments(url):
    def func(arg):
        return arg

    broker = get_broker(url)
    broker.expose(func)
    broker.expose(sum)
    broker.expose(add)
    with thread_worker(broker):
        q = get_queue(url)
        sum_123 = q.sum([q.func(1), q.func(2), q.func(3)])
        sum_1234 = q.add(sum_123, q.func(4))
        assert sum_1234.wait(WAIT), repr(sum_1234)
        assert sum_1234.value == 10


def test_dependency_graph(url):
    ts = TaskSpace()

    @ts.task
    def left(num):
        return ("left", num)

    @ts.task
    def right(num):
        return ("right", num)

    @ts.task
    def catch(left, right, num):
        return [num, left, right]

    @ts.task
    def combine(items):
        return {i[0]: i[1:] for i in items}

    broker = get_broker(url)
    broker.expose(ts)
    with thread_worker(broker, workers=3):
        q = get_queue(url)
        catches = []
        for num in [1, 2, 3]:
            left_ = q.left(num)
            right_ = q.right(num)
            catches.append(q.catch(left_, right_, num))
        res = q.combine(catches)
        assert res.wait(WAIT), repr(res)
        assert res.value == {
            1: [("left", 1), ("right", 1)],
            2: [("left", 2), ("right", 2)],
            3: [("left", 3), ("right", 3)],
        }


def test_task_with_failed_deferred_arguments(url):
    def func(arg):
        if arg == 0:
            raise Exception("zero fail!")
        return arg

    broker = get_broker(url)
    broker.expose(func)
    with thread_worker(broker):
        q = get_queue(url)
        items = [q.func(1), q.func(0), q.func(2)]
        task = Task(q.func, on_error=Task.PASS)
        res = task(items)
        assert res.wait(timeout=WAIT)
        fail = TaskFailure("func", "default", items[1].id, "Exception: zero fail!")
        assert res.value == [1, fail, 2]


def test_deferred_task_fails_on_error_by_default(url):
    def func(arg):
        if arg == 0:
            raise Exception("zero fail!")
        return arg

    broker = get_broker(url)
    broker.expose(func)
    with thread_worker(broker):
        q = get_queue(url)
        res = q.func([q.func(1), q.func(0), q.func(2)])
        assert res.wait(timeout=WAIT)
        failed_id = res.task.args[0][1].id
        with pytest.raises(TaskFailure) as info:
            value_of(res)
        assert str(info.value) == f"func [default:{failed_id}] Exception: zero fail!"
        assert res.status == "failed"


def test_named_queue(url):
    foo_state = Collector()
    bar_state = Collector()

    def foo_func(arg):
        foo_state.add(arg)

    def bar_func(arg):
        bar_state.add(arg)

    foo_broker = get_broker(url, "foo")
    foo_broker.expose(foo_func)
    bar_broker = get_broker(url, "bar")
    bar_broker.expose(bar_func)

    with thread_worker(foo_broker), thread_worker(bar_broker):
        f = get_queue(url, "foo")
        f.foo_func(1)
        b = get_queue(url, "bar")
        b.bar_func(2)
        assert foo_state.wait_for(1) == [1]
        assert bar_state.wait_for(1) == [2]
        # the bar queue's task never reached the foo worker, nor vice versa
        assert repr(b.bar_func(3)).startswith("<Deferred bar_func [bar:")


def test_task_namespaces(url):
    state = Collector()
    ts = TaskSpace("module.path")

    @ts.task
    def foo():
        state.add("foo")

    @ts.task
    def bar(arg):
        state.add(arg)

    broker = get_broker(url)
    broker.expose(ts)
    with thread_worker(broker):
        q = get_queue(url)
        q.module.path.foo()
        q.module.path.bar(1)
        assert set(state.wait_for(2)) == {"foo", 1}


def test_more_namespaces(url):
    state = Collector()
    foo = TaskSpace("foo")
    bar = TaskSpace("foo.bar")
    baz = TaskSpace("foo.bar.baz")

    @foo.task
    def join(arg):
        state.add(f"foo-join {arg}")

    @bar.task
    def kick(arg):
        state.add(f"bar-kick {arg}")

    @baz.task  # noqa: F811 (same function name in another space, as in WorQ)
    def join(arg):  # noqa: F811
        state.add(f"baz-join {arg}")

    @baz.task  # noqa: F811
    def kick(arg):  # noqa: F811
        state.add(f"baz-kick {arg}")

    broker = get_broker(url)
    broker.expose(foo)
    broker.expose(bar)
    broker.expose(baz)
    with thread_worker(broker):
        q = get_queue(url)
        q.foo.join(1)
        q.foo.bar.kick(2)
        q.foo.bar.baz.join(3)
        q.foo.bar.baz.kick(4)
        assert set(state.wait_for(4)) == {
            "foo-join 1",
            "bar-kick 2",
            "baz-join 3",
            "baz-kick 4",
        }


def test_expose_method(url):
    done = threading.Event()

    class Database:
        value = None

        def update(self, value):
            self.value = value
            done.set()

    class TaskObj:
        def __init__(self, db):
            self.db = db

        def update_value(self, value):
            self.db.update(value)

    db = Database()
    obj = TaskObj(db)
    broker = get_broker(url)
    broker.expose(obj.update_value)
    with thread_worker(broker):
        q = get_queue(url)
        q.update_value(2)
        assert done.wait(WAIT)
        assert db.value == 2

"""The broker: URL lookup, failure paths, no polling, no GC dependence."""

from __future__ import annotations

import gc
import logging
import threading

import pytest

import poolx
from poolx import Task, TaskFailure, get_broker, get_queue
from poolx.core import AbstractTaskQueue, Broker, register_backend
from poolx.queue import memory
from poolx.queue.registry import BackendRegistry, registry
from poolx.serialization import PickleSerializer, SerializationError
from poolx.task import TaskExpired

from .helpers import WAIT, thread_worker, value_of

# -- finding backends ---------------------------------------------------------


def test_public_names():
    assert poolx.get_broker is get_broker
    assert poolx.get_queue is get_queue
    assert poolx.Task is Task
    assert poolx.TaskFailure is TaskFailure
    from poolx.task import TaskSpace

    assert poolx.TaskSpace is TaskSpace


@pytest.mark.parametrize(
    "bad, message",
    [
        # WorQ's text first ("invalid broker URL: URL"), then why
        ("nosuch://host/0", r"^invalid broker URL: nosuch://host/0 \(unknown scheme 'nosuch'"),
        ("memory", r"^invalid broker URL: memory \(malformed"),
        ("memory:", r"^invalid broker URL: memory: \(malformed"),
        ("", r"^invalid broker URL:  \(malformed"),
        ("http://[::1", r"^invalid broker URL: http://\[::1 \(malformed"),
        (None, "invalid broker URL: None"),
        ("memory://?x=1", "memory:// URLs take no options: 'memory://\\?x=1'"),
    ],
)
def test_bad_urls_are_value_errors_naming_the_url(bad, message):
    with pytest.raises(ValueError, match=message):
        get_broker(bad)
    with pytest.raises(ValueError, match=message):
        get_queue(bad)


def test_memory_takes_no_backend_options():
    with pytest.raises(ValueError, match="take no options"):
        get_broker("memory://", "default", "extra")


def test_register_backend_in_code():
    made = []

    def factory(url, name, *args, **kw):
        made.append((url, name, args, kw))
        return memory.TaskQueue(url, name)

    register_backend("testscheme", factory)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_backend("testscheme", factory)
        broker = get_broker("testscheme://x", "q", 1, opt=2)
        assert isinstance(broker, Broker)
        assert made == [("testscheme://x", "q", (1,), {"opt": 2})]
        assert broker.url == "testscheme://x" and broker.name == "q"
        assert "testscheme" in registry.schemes()
        register_backend("testscheme", "poolx.queue.memory:TaskQueue", replace=True)
        assert isinstance(get_broker("TESTSCHEME://y").taskqueue, memory.TaskQueue)
    finally:
        registry.unregister("testscheme")
    with pytest.raises(ValueError, match="unknown scheme"):
        get_broker("testscheme://x")


def test_registry_reads_entry_points_and_reports_import_errors(monkeypatch):
    class EP:
        def __init__(self, name, value):
            self.name, self.value = name, value

    import poolx.queue.registry as registry_module

    monkeypatch.setattr(
        registry_module,
        "entry_points",
        lambda group: [EP("plug", "poolx.queue.memory:TaskQueue"), EP("broken", "no_such_mod:X")],
    )
    reg = BackendRegistry()
    assert reg.lookup("plug") is memory.TaskQueue
    assert {"memory", "plug", "broken"} <= set(reg.schemes())
    with pytest.raises(ImportError, match="backend for broken:// URLs"):
        reg.lookup("broken")
    with pytest.raises(KeyError):
        reg.lookup("other")


def test_builtin_backends_need_no_entry_points(monkeypatch):
    # the built-in table is the one home of poolx's own schemes: they work
    # from a source tree too, with no package metadata installed
    import poolx.queue.registry as registry_module

    monkeypatch.setattr(registry_module, "entry_points", lambda group: [])
    reg = BackendRegistry()
    assert reg.lookup("memory") is memory.TaskQueue
    assert set(reg.schemes()) == {"memory", "redis", "rediss", "unix", "redis+cluster"}


def test_backend_may_choose_the_serializer():
    class Custom(PickleSerializer):
        pass

    queue = memory.TaskQueue("memory://custom-serializer", "default")
    queue.serializer = Custom()
    assert isinstance(Broker(queue).serializer, Custom)
    assert type(Broker(memory.TaskQueue("memory://x")).serializer) is PickleSerializer
    mine = PickleSerializer()
    assert Broker(queue, serializer=mine).serializer is mine


def test_abstract_task_queue_methods_are_abstract():
    queue = AbstractTaskQueue("x://", "q")
    for name, args in [
        ("enqueue_task", (None, b"")),
        ("defer_task", (None, b"", [])),
        ("undefer_task", ("id",)),
        ("reserve_argument", ("a", "b")),
        ("set_argument", ("a", "b", b"")),
        ("get_arguments", ("a",)),
        ("get", (0,)),
        ("size", ()),
        ("discard_pending", ()),
        ("set_task_timeout", ("a", 1)),
        ("get_status", ("a",)),
        ("set_result", ("a", b"", 1)),
        ("pop_result", ("a", 0)),
        ("discard_result", ("a", b"")),
    ]:
        with pytest.raises(NotImplementedError):
            getattr(queue, name)(*args)


# -- failure paths ----------------------------------------------------------------


def test_broker_task_failed(url):
    started = threading.Event()
    proceed = threading.Event()

    def func():
        started.set()
        assert proceed.wait(WAIT)
        return "too late"

    broker = get_broker(url)
    broker.expose(func)
    with thread_worker(broker):
        res = Task(get_queue(url).func, result_timeout=WAIT)()
        assert started.wait(WAIT)
        broker.task_failed(res)
        assert res.wait(timeout=WAIT), repr(res)
        proceed.set()
        with pytest.raises(TaskExpired):
            value_of(res)


def test_task_failed_propagates_to_dependents(url):
    def func(arg):
        return arg

    broker = get_broker(url)
    broker.expose(func)
    q = broker.queue()
    lost = q.lost()
    fail = q.func(lost)
    passed = Task(q.func, on_error=Task.PASS)([lost])
    broker.next_task(WAIT)  # a worker takes "lost"... and vanishes
    broker.task_failed(lost)
    with thread_worker(broker):
        assert fail.wait(WAIT) and passed.wait(WAIT)
    with pytest.raises(TaskExpired) as info:
        value_of(fail)
    assert info.value.task_id == lost.id
    [value] = passed.value
    assert isinstance(value, TaskExpired) and value.task_name == "lost"


def test_unserializable_argument_fails_at_enqueue_naming_the_task(url):
    q = get_queue(url)
    with pytest.raises(SerializationError) as info:
        q.some.task(threading.Lock())
    assert isinstance(info.value, TypeError)
    assert "cannot serialize task some.task [default:" in str(info.value)
    assert "lock" in str(info.value)
    assert len(q) == 0


def test_unserializable_result_becomes_task_failure(url):
    def lock():
        return threading.Lock()

    broker = get_broker(url)
    broker.expose(lock)
    with thread_worker(broker):
        res = get_queue(url).lock()
        assert res.wait(WAIT)
    with pytest.raises(TaskFailure, match="cannot serialize result: TypeError"):
        value_of(res)


class Unloadable:
    """Pickles fine, fails to unpickle (like a class missing in the worker)."""

    def __reduce__(self):
        return (_explode, ())


def _explode():
    raise ImportError("no module named 'gone'")


def test_undeserializable_task_fails_clearly_and_worker_keeps_going(url, caplog):
    def func(arg):
        return arg

    broker = get_broker(url)
    broker.expose(func)
    with caplog.at_level(logging.ERROR), thread_worker(broker):
        q = get_queue(url)
        bad = q.func(Unloadable())
        good = q.func("fine")
        assert bad.wait(WAIT) and good.wait(WAIT)
    assert good.value == "fine"
    with pytest.raises(TaskFailure) as info:
        value_of(bad)
    assert info.value.args == (
        "func",
        "default",
        bad.id,
        "cannot deserialize task: ImportError: no module named 'gone'",
    )
    assert "cannot deserialize task" in caplog.text


def test_garbage_message_fails_with_unknown_name(url):
    broker = get_broker(url)
    res = broker.queue().func()
    queue = broker.taskqueue
    task_id, _ = queue.get(WAIT)  # take the real message...
    queue.get = lambda timeout=None: (task_id, b"\x80\x05garbage")  # ...hand over garbage
    try:
        assert broker.next_task(0) is None
    finally:
        del queue.get
    assert res.wait(WAIT)
    with pytest.raises(TaskFailure) as info:
        value_of(res)
    assert info.value.task_name == "<unknown>"
    assert info.value.task_id == res.id
    assert info.value.error.startswith("cannot deserialize task: ")


def test_failed_result_deserialization_is_a_task_failure(url):
    broker = get_broker(url)
    res = broker.queue().func()
    task = broker.next_task(WAIT)
    broker.set_result(task, Unloadable())
    assert res.wait(WAIT)
    with pytest.raises(TaskFailure, match="cannot deserialize result: ImportError"):
        value_of(res)


def test_argument_result_not_available(url):
    broker = get_broker(url)
    q = broker.queue()
    gone = q.func()
    broker.set_result(broker.next_task(WAIT), 1)
    assert broker.pop_result(gone) == 1  # read by someone else
    from poolx.task import Deferred, FunctionTask

    stale = Deferred(broker, FunctionTask("func", (), {}, {"id": gone.id}))
    with pytest.raises(TaskFailure, match=f"task \\[default:{gone.id}\\] result is not available"):
        q.sum([stale])
    assert len(q) == 0  # the half-made task was cleaned up


def test_deferred_from_another_queue_is_refused(url):
    foo = get_queue(url, "foo")
    bar = get_queue(url, "bar")
    with pytest.raises(ValueError, match="belongs to"):
        bar.func(foo.func())


def test_pop_result_rejects_negative_timeout(url):
    broker = get_broker(url)
    res = broker.queue().func()
    with pytest.raises(ValueError):
        broker.pop_result(res, timeout=-1)
    with pytest.raises(KeyError):
        broker.pop_result(res, timeout=0)


# -- better than WorQ -------------------------------------------------------------


def test_dependent_task_runs_after_caller_dropped_its_deferred(url):
    ran = threading.Event()

    def first():
        return 1

    def second(x):
        ran.set()
        return x

    broker = get_broker(url)
    broker.expose(first)
    broker.expose(second)
    q = get_queue(url)
    q.second(q.first())  # every Deferred dropped at once
    del q
    gc.collect()
    with thread_worker(broker):
        assert ran.wait(WAIT)


def test_waiting_blocks_in_the_backend_without_polling(url):
    broker = get_broker(url)
    queue = broker.taskqueue
    calls = []
    real = queue.pop_result

    def counting_pop_result(task_id, timeout):
        calls.append(timeout)
        return real(task_id, timeout)

    queue.pop_result = counting_pop_result
    try:
        res = broker.queue().func()
        task = broker.next_task(WAIT)
        timer = threading.Timer(0.2, broker.set_result, (task, "done"))
        timer.start()
        assert res.wait(WAIT)
        timer.join()
    finally:
        del queue.pop_result
    assert len(calls) == 1  # one blocking call, woken by the result
    assert res.value == "done"


def test_heartbeat_extends_task_timeout(url):
    broker = get_broker(url)
    seen = []
    queue = broker.taskqueue
    real = queue.set_task_timeout

    def recording_set_task_timeout(task_id, timeout):
        seen.append((task_id, timeout))
        real(task_id, timeout)

    queue.set_task_timeout = recording_set_task_timeout
    try:
        res = Task(broker.queue().func, heartrate=2)()
        broker.heartbeat(broker.next_task(WAIT))
    finally:
        del queue.set_task_timeout
    assert seen == [(res.id, 2 * 2 + 5)]


def test_worq_error_texts(url):
    """The texts WorQ 1.1.1's own tests check (worq/tests/test_task.py)."""
    q = get_queue(url)
    with pytest.raises(ValueError) as info:
        del q[:2]
    assert str(info.value) == "delitem is only valid with a full slice ([:])"
    with pytest.raises(ValueError) as info:
        get_broker("bogus://x")
    assert str(info.value).startswith("invalid broker URL: bogus://x")

"""Queue, Task, TaskSpace, TaskFailure and Deferred: names, texts, options."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import uuid

import pytest

from poolx import Task, TaskFailure, TaskSpace, get_broker, get_queue
from poolx.const import HOUR
from poolx.task import Deferred, DuplicateTask, FunctionTask, TaskExpired

from .helpers import WAIT, thread_worker, value_of

# -- Queue -------------------------------------------------------------------


def test_queue_attribute_access_builds_dotted_targets(url):
    q = get_queue(url)
    assert repr(q.foo) == "<Queue foo [default]>"
    assert repr(q.foo.bar) == "<Queue foo.bar [default]>"
    assert str(q.foo.bar) == "foo.bar"
    assert repr(get_queue(url, "other", "a.b").c) == "<Queue a.b.c [other]>"


def test_queue_equality_means_same_broker(url):
    broker = get_broker(url)
    q = broker.queue()
    assert q.foo == q.bar
    assert q == broker.queue("x")
    assert q != get_broker(url).queue()
    assert q != "not a queue"
    assert len({q.a, q.b}) == 1


def test_queue_dunder_lookups_are_not_task_names(url):
    q = get_queue(url)
    with pytest.raises(AttributeError):
        q.__deepcopy__  # noqa: B018


def test_len_and_del_slice(url):
    broker = get_broker(url)
    q = broker.queue()
    assert len(q) == 0
    a = q.func(1)
    q.func(a)  # a deferred (pending) task counts too
    assert len(q) == 2
    assert len(broker) == 2
    del q[:]
    assert len(q) == 0
    with pytest.raises(TaskExpired):
        a.wait(WAIT) and a.value
    for key in (0, slice(1, None), "x"):
        with pytest.raises(ValueError, match=r"delitem is only valid with a full slice \(\[:\]\)"):
            del q[key]


def test_default_options_from_get_queue(url):
    q = get_queue(url, ignore_result=True)
    assert q.func(1) is None
    assert q.a.b.func(1) is None  # derived queues keep the defaults
    with pytest.raises(ValueError, match="invalid task options"):
        get_queue(url, bogus=1)
    with pytest.raises(ValueError, match="invalid heartrate"):
        get_queue(url, heartrate=-1)


# -- Task options -------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"on_error": "ignore"}, "invalid on_error: 'ignore'"),
        ({"ignore_result": True, "result_timeout": 10}, "incompatible with result_timeout"),
        ({"result_timeout": "1"}, "invalid result_timeout: '1'"),
        ({"result_timeout": 0}, "invalid result_timeout: 0"),
        ({"heartrate": None}, "invalid heartrate: None"),
        ({"heartrate": True}, "invalid heartrate: True"),
        ({"id": 42}, "invalid id: 42"),
    ],
)
def test_invalid_task_options(url, options, message):
    q = get_queue(url)
    with pytest.raises(ValueError, match=message):
        Task(q.func, **options)


def test_task_options_and_with_options(url):
    q = get_queue(url)
    task = Task(q.func, on_error=Task.PASS, result_timeout=10, heartrate=5)
    assert task.name == "func"
    assert task.options == {"on_error": "pass", "result_timeout": 10, "heartrate": 5}
    assert Task(q.func).options == {}  # defaults are not stored
    clone = task.with_options({"ignore_result": True})
    assert clone.options == {"ignore_result": True}
    assert clone.queue is task.queue
    assert repr(task) == "<Task func [default]>"
    with pytest.raises(ValueError, match="invalid queue"):
        Task("func")


def test_task_defaults(url):
    res = get_queue(url).func()
    assert res.task.result_timeout == HOUR
    assert res.task.heartrate == 30
    assert res.task.on_error == Task.FAIL
    assert res.task.ignore_result is False


def test_default_task_ids_are_random_uuid4_hex(url):
    """As WorQ's ``uuid4().hex``: 32 hex digits, version 4, RFC 4122 variant."""
    q = get_queue(url)
    ids = [q.func(i).id for i in range(200)]
    assert len(set(ids)) == 200
    for task_id in ids:
        parsed = uuid.UUID(task_id)
        assert parsed.hex == task_id and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_plain_calls_and_tasks_without_options_store_the_same_task(url):
    """``q.f(x)`` takes a shortcut past option checks: same task as Task(q.f)."""
    q = get_queue(url, "plain")
    plain, made = q.a.func(1, k="v"), Task(q.a.func)(1, k="v")
    assert (plain.name, plain.task.args, plain.task.kw, plain.task.options) == \
        (made.name, made.task.args, made.task.kw, made.task.options) == ("a.func", (1,), {"k": "v"}, {})
    assert plain.status == made.status == "enqueued"


def test_task_id_string_and_duplicate(url):
    q = get_queue(url)
    res = Task(q.func, id="job-1")(1)
    assert res.id == "job-1"
    with pytest.raises(DuplicateTask) as info:
        Task(q.func, id="job-1")(2)
    assert isinstance(info.value, TaskFailure)
    assert info.value.args == ("func", "default", "job-1", "cannot enqueue task with duplicate id")
    # a deferred task with a duplicate id is refused too
    with pytest.raises(DuplicateTask):
        Task(q.other, id="job-1")(res)


def test_task_id_function_of_arguments(url):
    q = get_queue(url)
    task = Task(q.func, id=lambda a, b=0: f"sum-{a}-{b}")
    assert task(1, b=2).id == "sum-1-2"
    with pytest.raises(DuplicateTask):
        task(1, b=2)
    with pytest.raises(ValueError, match="not a string"):
        Task(q.func, id=lambda: 3)()


def test_ignore_result_frees_its_id_when_taken(url):
    broker = get_broker(url)
    q = broker.queue()
    Task(q.func, id="once", ignore_result=True)()
    with pytest.raises(DuplicateTask):
        Task(q.func, id="once", ignore_result=True)()
    assert broker.next_task(WAIT).id == "once"
    Task(q.func, id="once", ignore_result=True)()  # no error: the first left the store


# -- TaskSpace and expose ----------------------------------------------------


def test_task_space_names_and_conflicts(url):
    ts = TaskSpace("pkg.mod")

    @ts.task
    def f():
        return 1

    ts.task(len, "length")
    assert set(ts.tasks) == {"pkg.mod.f", "pkg.mod.length"}
    with pytest.raises(ValueError, match="'pkg.mod.f' conflicts"):
        ts.task(f)

    broker = get_broker(url)
    broker.expose(ts)
    with pytest.raises(ValueError, match="conflicts with existing task"):
        broker.expose(ts)
    broker.expose(ts, replace=True)
    assert broker.tasks["pkg.mod.length"] is len


# -- TaskFailure -----------------------------------------------------------------


def test_task_failure_text_args_and_equality():
    fail = TaskFailure("name", "queue", "id", "Error: text")
    assert str(fail) == "name [queue:id] Error: text"
    assert repr(fail) == "<TaskFailure name [queue:id] Error: text>"
    assert (fail.task_name, fail.queue, fail.task_id, fail.error) == (
        "name",
        "queue",
        "id",
        "Error: text",
    )
    assert fail == TaskFailure("name", "queue", "id", "Error: text")
    assert fail != TaskFailure("name", "queue", "id", "other")
    assert pickle.loads(pickle.dumps(fail)) == fail
    assert isinstance(TaskExpired("a", "b", "c", "d"), TaskFailure)
    assert repr(TaskExpired("a", "b", "c", "d")) == "<TaskExpired a [b:c] d>"


# -- Deferred ----------------------------------------------------------------------


def test_deferred_before_completion(url):
    res = get_queue(url).func(1)
    assert not res
    assert not res.has_value()
    assert res.wait(0) is False
    with pytest.raises(AttributeError, match="Deferred value not available"):
        value_of(res)
    with pytest.raises(ValueError, match="negative timeout"):
        res.wait(-1)


def test_deferred_status_is_asked_each_time(url):
    broker = get_broker(url)
    res = broker.queue().func()
    assert res.status == "enqueued"
    task = broker.next_task(WAIT)
    assert res.status == "processing"
    broker.set_result(task, 7)
    assert res.status == "success"
    assert res.value == 7


def test_deferred_of_unknown_task_fails_instead_of_hanging(url):
    broker = get_broker(url)
    res = Deferred(broker, FunctionTask("func", (), {}, {"id": "nope"}))
    assert res.wait(WAIT)
    assert repr(res) == "<Deferred func [default:nope] failed>"
    with pytest.raises(TaskExpired, match="expired before a result was returned"):
        value_of(res)


def test_worker_interrupted(url):
    def func(arg):
        raise KeyboardInterrupt()

    broker = get_broker(url)
    broker.expose(func)
    with thread_worker(broker):
        res = get_queue(url).func("arg")
        assert res.wait(WAIT), repr(res)
        assert repr(res) == f"<Deferred func [default:{res.id}] failed>"
        with pytest.raises(TaskFailure) as info:
            value_of(res)
        assert str(info.value) == f"func [default:{res.id}] KeyboardInterrupt: "


def test_wait_blocks_until_result_in_other_thread(url):
    broker = get_broker(url)
    res = broker.queue().func()
    task = broker.next_task(WAIT)
    results = []
    waiter = threading.Thread(target=lambda: results.append(res.wait(WAIT)))
    waiter.start()
    broker.set_result(task, "late")
    waiter.join(WAIT)
    assert results == [True]
    assert res.value == "late"


def test_deferred_pickles_and_reconnects(url):
    broker = get_broker(url)
    res = broker.queue().func()
    copy = pickle.loads(pickle.dumps(res))
    assert (copy.id, copy.name, copy.broker.url, copy.broker.name) == (
        res.id,
        "func",
        url,
        "default",
    )
    assert copy.status == "enqueued"
    broker.set_result(broker.next_task(WAIT), {"answer": 42})
    assert copy.wait(WAIT)
    assert copy.value == {"answer": 42}
    done = pickle.loads(pickle.dumps(copy))  # a loaded value travels along
    assert done.has_value() and done.value == {"answer": 42}


def test_wait_follows_a_deferred_returned_as_value(url):
    def inner(x):
        return x * 2

    def outer(x):
        return get_queue(url).inner(x)  # returns a Deferred

    broker = get_broker(url)
    broker.expose(inner)
    broker.expose(outer)
    with thread_worker(broker, workers=2):
        res = get_queue(url).outer(21)
        assert res.wait(WAIT), repr(res)
        assert res.value == 42
        assert res.status == "success"


def test_follow_respects_timeout_and_resumes(url):
    broker = get_broker(url)
    q = broker.queue()
    outer = q.outer()
    inner = q.inner()
    broker.set_result(broker.next_task(WAIT), inner)  # outer returns inner
    assert outer.wait(0) is False  # outer done, inner not yet
    assert outer.status == "enqueued"  # the status of the task followed
    broker.set_result(broker.next_task(WAIT), "deep")
    assert outer.wait(WAIT)
    assert outer.value == "deep"


def test_deferred_unpickles_in_another_process(url):
    broker = get_broker(url)
    q = broker.queue()
    done, waiting = q.done(), q.waiting()
    broker.set_result(broker.next_task(WAIT), 42)
    assert done.wait(WAIT)
    script = (
        "import pickle, sys\n"
        "done, waiting = pickle.load(sys.stdin.buffer)\n"
        "print(done.value, waiting.name, waiting.id, waiting.broker.url)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        input=pickle.dumps((done, waiting)),
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().split() == ["42", "waiting", waiting.id, url]

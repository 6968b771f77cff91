"""Security on Redis: bytes written straight into Redis never run, and a
password never shows in a repr, a log line or an error."""

from __future__ import annotations

import logging
import os
import pickle

import pytest

from poolx import Task, get_broker, get_queue
from poolx.queue.redis import RedisUnavailable
from poolx.serialization import JSONSerializer
from poolx.task import FunctionTask, TaskFailure
from tests.redis.tasks import ts
from tests.redis_server import free_port
from tests.taskqueue.conftest import isolated_url
from tests.taskqueue.helpers import WAIT, thread_worker, value_of

PASSWORD = "hunter2-Zq9"


class Exploit:
    """A pickle that creates a directory when it is *loaded*."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def push_raw_task(queue, task_id: str, message: bytes) -> None:
    """Write a task record straight into Redis, as an attacker with access to
    the server would (same layout as the backend's)."""
    key = queue._key + "t:" + task_id
    queue.client.hset(key, mapping={"s": "enqueued", "m": message, "ir": "0",
                                    "ls": 60000, "mx": 4, "d": 0, "n": "x"})
    queue.client.lpush(queue._key + "ready", "t" + task_id)


@pytest.mark.parametrize("how", ["secret", "json"])
def test_crafted_pickle_pushed_into_redis_does_not_run(url, tmp_path, caplog, how):
    marker = tmp_path / "pwned"
    kw = {"secret": "s3cret"} if how == "secret" else {"serializer": JSONSerializer()}
    worker = get_broker(url, **kw)
    worker.expose(ts)
    envelope = {"name": "rt.square", "id": "evil", "options": {}, "args": {},
                "payload": pickle.dumps(((Exploit(str(marker)),), {}))}
    push_raw_task(worker.taskqueue, "evil", pickle.dumps(Exploit(str(marker))))
    push_raw_task(worker.taskqueue, "evil2", pickle.dumps(envelope))
    with caplog.at_level(logging.ERROR):
        assert worker.next_task(WAIT) is None
        assert worker.next_task(WAIT) is None
    assert not marker.exists()
    # Both are marked failed, saying why (read by a broker that can).
    reader = get_broker(url, **kw)
    for task_id in ("evil", "evil2"):
        stub = FunctionTask("?", (), {}, {"id": task_id})
        failure = reader.pop_result(stub, WAIT)
        assert isinstance(failure, TaskFailure)
        assert failure.error.startswith("cannot deserialize task: ")
        assert failure.task_name == "<unknown>"
    expected = "SignatureError: message is not signed" if how == "secret" else "Error"
    assert expected in caplog.text
    assert not marker.exists()


def test_tampered_result_and_argument_are_rejected(url, tmp_path):
    marker = tmp_path / "pwned"
    broker = get_broker(url, secret="s3cret")
    q = broker.queue()
    # A crafted result replaces a stored one: the waiter gets a TaskFailure.
    target = q.rt.square(4)
    task = broker.next_task(WAIT)
    broker.set_result(task, 16)
    broker.taskqueue.flush()
    queue = broker.taskqueue
    queue.client.hset(queue._key + "t:" + target.id, "r", pickle.dumps(Exploit(str(marker))))
    assert target.wait(WAIT)
    with pytest.raises(TaskFailure, match="cannot deserialize result: SignatureError"):
        value_of(target)
    # A crafted Deferred argument value: the dependent task fails unrun.
    arg = q.rt.square(5)
    dependent = q.rt.total([arg])
    broker.set_result(broker.next_task(WAIT), 25)
    assert dependent.status == "enqueued"  # its argument is stored with it...
    queue.client.hset(queue._key + "t:" + dependent.id, "a:" + arg.id,
                      pickle.dumps(Exploit(str(marker))))  # ...and replaced
    assert broker.next_task(WAIT) is None
    assert dependent.wait(WAIT)
    with pytest.raises(TaskFailure, match="SignatureError"):
        value_of(dependent)
    assert not marker.exists()


def test_password_never_in_reprs_logs_or_errors(private_redis, caplog):
    server = private_redis(password=PASSWORD)
    url = isolated_url(server.url)
    assert PASSWORD in url
    texts = []
    with caplog.at_level(logging.DEBUG):
        broker = get_broker(url)
        broker.expose(ts)
        q = get_queue(url)
        texts += [repr(broker), repr(broker.taskqueue), repr(q), str(broker.taskqueue.display_url),
                  repr(broker.taskqueue.client)]
        with thread_worker(broker):
            res = Task(q.rt.square, heartrate=1)(6)
            bad = q.rt.no_such_task()
            assert res.wait(WAIT) and bad.wait(WAIT)
            texts += [repr(res), repr(bad), repr(Task(q.rt.square))]
        with pytest.raises(TaskFailure) as info:
            value_of(bad)
        texts.append(str(info.value))
        # Errors: wrong password, server down, malformed or unknown URLs.
        wrong = url.replace(PASSWORD, "wrong-pw")
        with pytest.raises(RedisUnavailable) as info:
            get_queue(wrong).rt.square(1)
        texts.append(str(info.value))
        assert "refused the credentials" in str(info.value)
        for bad_url in (f"redis://:{PASSWORD}@127.0.0.1:notaport/0",
                        f"redis://:{PASSWORD}@127.0.0.1:6379/notadb",
                        f"nosuch://:{PASSWORD}@host/0"):
            with pytest.raises(ValueError) as info:
                get_broker(bad_url)
            texts.append(str(info.value))
        connected = get_broker(url, retry_timeout=0.2)
        assert connected.taskqueue.ping()
        server.kill()
        with pytest.raises(RedisUnavailable) as info:
            connected.queue().rt.square(2)  # retried (and logged), then given up
        texts.append(str(info.value))
        assert "unreachable for 0 s" in str(info.value)
        with pytest.raises(RedisUnavailable) as info:
            get_queue(url).rt.square(3)  # never connected: fails at once
        texts.append(str(info.value))
    texts.append(caplog.text)
    assert "retrying for up to" in caplog.text
    assert "***" in texts[0]
    for text in texts:
        assert PASSWORD not in text, text


def test_redis_down_at_start_is_a_clear_error_naming_the_url():
    port = free_port()  # nothing listens there
    url = f"redis://user:{PASSWORD}@127.0.0.1:{port}/0"
    broker = get_broker(url)  # connecting is lazy...
    with pytest.raises(RedisUnavailable) as info:
        broker.queue().rt.square(1)  # ...the first call says what is wrong
    text = str(info.value)
    assert text.startswith(f"cannot connect to Redis at redis://user:***@127.0.0.1:{port}/0")
    assert PASSWORD not in text and isinstance(info.value, ConnectionError)
    with pytest.raises(RedisUnavailable):
        broker.taskqueue.ping()


@pytest.mark.parametrize("url, shown", [
    ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
    ("redis://host/0?password=pw&db=1", "redis://host/0?password=***&db=1"),
    ("redis://u:pw@host/0?ssl_password=x&prefix=p#frag", "redis://u:***@host/0?ssl_password=***&prefix=p#frag"),
    ("redis+cluster://a:1,b:2/?prefix=p", "redis+cluster://a:1,b:2/?prefix=p"),
    ("memory://", "memory://"),
])
def test_a_password_in_the_query_is_redacted_too(url, shown):
    """redis-py takes ``?password=`` (and ``username=``...) from the query:
    the dashboard and ``poolx status`` showed it (review of the dashboard)."""
    from poolx.queue.urls import redact_url

    assert redact_url(url) == shown
    assert "pw" not in redact_url(url).replace("prefix", "")

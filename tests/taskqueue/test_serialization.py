"""Serializers: pickle, JSON, HMAC-signed; secrets from the argument or the
environment.  The end-to-end tests run on every backend URL."""

from __future__ import annotations

import logging
import os
import pickle

import pytest

from poolx import get_broker, get_queue
from poolx.const import TASK_EXPIRED
from poolx.serialization import (
    JSONSerializer,
    PickleSerializer,
    SignatureError,
    SignedSerializer,
)
from poolx.task import DuplicateTask, TaskExpired, TaskFailure, wait_all

from .helpers import WAIT, thread_worker, value_of


def _double(x):
    return x * 2


class Ref:
    """Stands for something a serializer writes as a reference."""


def test_signed_round_trip_with_references_and_key_rotation():
    old = SignedSerializer(secret="old")
    new = SignedSerializer(JSONSerializer(), secret=["new", "old"])
    refs = {"R": "resolved"}

    def pid(obj):
        return "R" if isinstance(obj, Ref) else None

    message = old.dumps({"a": ("x", b"\x00", Ref())}, pid)
    assert message.startswith(b"PXH1")
    assert old.loads(message, refs.__getitem__) == {"a": ("x", b"\x00", "resolved")}
    msg = new.dumps([Ref(), 1], pid)
    assert new.loads(msg, refs.__getitem__) == ["resolved", 1]
    with pytest.raises(SignatureError, match="does not match"):
        old.loads(msg)  # signed with "new", which "old" does not know
    assert "new" not in repr(new) and "old" not in repr(new)
    with pytest.raises(ValueError):
        SignedSerializer(secret="")


def test_tampered_and_unsigned_messages_are_rejected_before_decoding():
    signer = SignedSerializer(secret="k")
    message = bytearray(signer.dumps("payload"))
    message[-1] ^= 1
    with pytest.raises(SignatureError, match="does not match"):
        signer.loads(bytes(message))
    with pytest.raises(SignatureError, match="not signed"):
        signer.loads(pickle.dumps("plain"))
    with pytest.raises(SignatureError, match="this broker has no secret"):
        PickleSerializer().loads(signer.dumps("x"))
    with pytest.raises(SignatureError, match="this broker has no secret"):
        JSONSerializer().loads(signer.dumps("x"))


def test_json_round_trips_poolx_values_and_refuses_others():
    js = JSONSerializer()
    value = {
        "t": (1, [2.5, None, True]),
        "b": b"\xff\x00",
        "int keys": {1: "one"},
        "$poolx": "a user's key that looks like a tag",
        "failure": TaskFailure("f", "q", "id", "Error: boom"),
        "expired": TaskExpired("f", "q", "id", "gone"),
        "dup": DuplicateTask("f", "q", "id", "dup"),
        "marker": TASK_EXPIRED,
    }
    back = js.loads(js.dumps(value))
    assert back == value
    assert type(back["expired"]) is TaskExpired and back["marker"] is TASK_EXPIRED
    assert b"\x80" not in js.dumps(value)  # text, not pickle
    with pytest.raises(TypeError, match="cannot encode set"):
        js.dumps({1, 2})
    with pytest.raises(ValueError, match="unknown"):
        js.loads(b'{"$poolx": "object", "v": "os.system"}')
    with pytest.raises(ValueError, match="reference"):
        js.loads(b'{"$poolx": "ref", "v": "x"}')


@pytest.mark.parametrize("serializer", [None, JSONSerializer()], ids=["pickle", "json"])
def test_signed_broker_end_to_end(url, serializer):
    broker = get_broker(url, secret="s3cret", serializer=serializer)
    broker.expose(_double)
    assert isinstance(broker.serializer, SignedSerializer)
    q = get_broker(url, secret="s3cret", serializer=serializer).queue()
    with thread_worker(broker):
        results = [q._double(i) for i in range(5)]
        total = q._double(results[4])
        assert wait_all([*results, total], WAIT)
    assert [r.value for r in results] == [0, 2, 4, 6, 8]
    assert total.value == 16


def test_unsigned_task_fails_on_a_signing_broker_and_never_runs(url, caplog):
    ran = []

    def func():
        ran.append(1)

    worker = get_broker(url, secret="s3cret")
    worker.expose(func)
    res = get_queue(url).func()  # an unsigned producer
    with caplog.at_level(logging.ERROR):
        assert worker.next_task(WAIT) is None
    assert res.wait(WAIT) and not ran
    with pytest.raises(TaskFailure) as info:
        value_of(res)
    # The failure itself is signed, so the producer without the secret cannot
    # read it; a producer with the secret can.
    assert "cannot deserialize result: SignatureError" in info.value.error
    assert "signed, but this broker has no secret" in info.value.error
    assert "SignatureError: message is not signed" in caplog.text


def test_secret_from_the_environment_and_empty_secret_disables(url, monkeypatch):
    monkeypatch.setenv("POOLX_SECRET", "from-env")
    assert isinstance(get_broker(url).serializer, SignedSerializer)
    assert isinstance(get_broker(url, secret="").serializer, PickleSerializer)
    monkeypatch.delenv("POOLX_SECRET")
    assert isinstance(get_broker(url).serializer, PickleSerializer)
    assert "from-env" not in repr(get_broker(url, secret="from-env").serializer)
    assert os.environ.get("POOLX_SECRET") is None

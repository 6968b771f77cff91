"""How the task-queue layer turns objects into bytes and back.

Owned here: the :class:`Serializer` interface, the default
:class:`PickleSerializer`, the :class:`JSONSerializer` for deployments that
must never unpickle, and :class:`SignedSerializer`, which wraps either with
an HMAC-SHA256 signature.  The :class:`~poolx.core.Broker` owns *one*
serializer and is its only caller; storage backends only ever see ``bytes``.

The one thing a serializer must do beyond plain ``dumps`` / ``loads`` is let
the broker swap objects for references on the way out and back in: a
:class:`~poolx.task.Deferred` passed as a task argument is written as its task
id (``persistent_id``) and read back as that task's *result*
(``persistent_load``).  Pickle has this built in; JSON writes a tagged
object; the signed envelope passes both hooks through to the format it wraps.

Trust.  Unpickling runs code chosen by whoever wrote the bytes, so a pickle
read from a shared server is only as safe as that server.  With a shared
secret (``secret=`` of :func:`~poolx.core.get_broker`, or the
``POOLX_SECRET`` environment variable) every message carries an HMAC, and
:meth:`SignedSerializer.loads` checks it *before* the inner format sees a
single byte: unsigned or tampered bytes raise :class:`SignatureError` and are
never unpickled.

Errors: ``dumps`` and ``loads`` may raise anything their format raises; the
broker turns a failure into :class:`SerializationError` (at enqueue, naming
the task) or into a failed task (at the worker), so nothing is lost silently.

Layer L3: imports :mod:`poolx.const` and :mod:`poolx.task` (the objects JSON
knows by name), nothing above.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import pickle
from collections.abc import Callable, Sequence
from typing import Any

from poolx.const import TASK_CANCELLED, TASK_EXPIRED
from poolx.task import (
    Deferred,
    DuplicateTask,
    TaskCancelled,
    TaskExpired,
    TaskFailure,
    restore_deferred,
)

__all__ = [
    "Serializer",
    "PickleSerializer",
    "JSONSerializer",
    "SignedSerializer",
    "SerializationError",
    "SignatureError",
    "SIGNED_MAGIC",
]

PersistentId = Callable[[Any], Any]
PersistentLoad = Callable[[Any], Any]


class SerializationError(TypeError):
    """An object could not be serialized (raised at enqueue time).

    A ``TypeError`` because the usual cause is an argument of a type the
    serializer cannot handle (a lock, a socket, a lambda under pickle).
    """


class SignatureError(ValueError):
    """A message is unsigned, tampered with, or signed with another secret.

    Raised by :meth:`SignedSerializer.loads` before anything is decoded, and
    by the plain serializers when they are handed a signed message.
    """


SIGNED_MAGIC = b"PXH1"
"""The first bytes of every signed message (poolx HMAC, version 1)."""


class Serializer:
    """Interface: turn objects into bytes and back, with reference hooks.

    :param persistent_id: called for every object written; returning
        something other than ``None`` writes that reference instead of the
        object.
    :param persistent_load: called with each reference when reading; its
        return value stands in for the reference.  ``None`` means the message
        must not contain references.
    """

    def dumps(self, obj: Any, persistent_id: PersistentId | None = None) -> bytes:
        raise NotImplementedError

    def loads(self, data: bytes, persistent_load: PersistentLoad | None = None) -> Any:
        raise NotImplementedError


class _ReferencingPickler(pickle.Pickler):
    """A pickler that writes some objects as references (``persistent_id``)."""

    def __init__(self, file: io.BytesIO, protocol: int, reference: PersistentId) -> None:
        super().__init__(file, protocol)
        self._reference = reference

    def persistent_id(self, obj: Any) -> Any:
        return self._reference(obj)


class _ReferencingUnpickler(pickle.Unpickler):
    """An unpickler that resolves the references of :class:`_ReferencingPickler`."""

    def __init__(self, file: io.BytesIO, resolve: PersistentLoad) -> None:
        super().__init__(file)
        self._resolve = resolve

    def persistent_load(self, pid: Any) -> Any:
        return self._resolve(pid)


class PickleSerializer(Serializer):
    """The default: pickle at the highest protocol (WorQ compatible)."""

    protocol = pickle.HIGHEST_PROTOCOL

    def dumps(self, obj: Any, persistent_id: PersistentId | None = None) -> bytes:
        if persistent_id is None:
            return pickle.dumps(obj, self.protocol)
        buf = io.BytesIO()
        _ReferencingPickler(buf, self.protocol, persistent_id).dump(obj)
        return buf.getvalue()

    def loads(self, data: bytes, persistent_load: PersistentLoad | None = None) -> Any:
        _refuse_signed(data)
        if persistent_load is None:
            return pickle.Unpickler(io.BytesIO(data)).load()
        return _ReferencingUnpickler(io.BytesIO(data), persistent_load).load()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(protocol={self.protocol})"


def _refuse_signed(data: bytes) -> None:
    if data[:4] == SIGNED_MAGIC:
        raise SignatureError(
            "message is signed, but this broker has no secret "
            "(pass secret= to get_broker or set POOLX_SECRET)"
        )


# -- JSON -----------------------------------------------------------------------

_TAG = "$poolx"
_PLAIN = (str, int, float, bool, type(None))
_FAILURES = {cls.__name__: cls for cls in (TaskFailure, TaskExpired, DuplicateTask, TaskCancelled)}
_MARKERS = {"TASK_EXPIRED": TASK_EXPIRED, "TASK_CANCELLED": TASK_CANCELLED}


class JSONSerializer(Serializer):
    """JSON messages: nothing is ever unpickled, whatever the server holds.

    Values a task takes and returns must then be JSON data: ``dict``,
    ``list``, ``str``, ``int``, ``float``, ``bool``, ``None`` — plus
    ``tuple`` and ``bytes`` (tagged, so they come back as themselves), dicts
    with non-string keys, and poolx's own objects (a
    :class:`~poolx.task.Deferred`, a :class:`~poolx.task.TaskFailure` and its
    subclasses, :data:`~poolx.const.TASK_EXPIRED` and
    :data:`~poolx.const.TASK_CANCELLED`).  Anything else raises
    ``TypeError`` at enqueue time (for a result: the task fails saying so).

    Special values are written as objects with a ``"$poolx"`` key; a user's
    dict that has such a key is itself tagged, so no value is ever mistaken
    for another.
    """

    def dumps(self, obj: Any, persistent_id: PersistentId | None = None) -> bytes:
        data = self._encode(obj, persistent_id)
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()

    def loads(self, data: bytes, persistent_load: PersistentLoad | None = None) -> Any:
        _refuse_signed(data)
        return self._decode(json.loads(data), persistent_load)

    def _encode(self, obj: Any, pid: PersistentId | None) -> Any:
        if isinstance(obj, _PLAIN):
            return obj
        if pid is not None:
            ref = pid(obj)
            if ref is not None:
                return {_TAG: "ref", "v": self._encode(ref, None)}
        kind = type(obj)
        if kind is list:
            return [self._encode(item, pid) for item in obj]
        if kind is dict:
            if all(type(key) is str for key in obj) and _TAG not in obj:
                return {key: self._encode(value, pid) for key, value in obj.items()}
            return {
                _TAG: "dict",
                "v": [[self._encode(k, pid), self._encode(v, pid)] for k, v in obj.items()],
            }
        if kind is tuple:
            return {_TAG: "tuple", "v": [self._encode(item, pid) for item in obj]}
        if kind in (bytes, bytearray):
            return {_TAG: "bytes", "v": base64.b64encode(obj).decode("ascii")}
        return self._encode_object(obj, pid)

    def _encode_object(self, obj: Any, pid: PersistentId | None) -> Any:
        if obj is TASK_EXPIRED or obj is TASK_CANCELLED:
            return {_TAG: "marker", "v": "TASK_EXPIRED" if obj is TASK_EXPIRED else "TASK_CANCELLED"}
        if isinstance(obj, TaskFailure):
            args = [self._encode(arg, pid) for arg in obj.args]
            data: dict[str, Any] = {_TAG: "failure", "type": type(obj).__name__, "v": args}
            if obj.attempts is not None:
                data["attempts"] = obj.attempts
            if obj.retryable:
                data["retryable"] = True
            return data
        if isinstance(obj, Deferred):
            args = obj.__reduce__()[1]  # what restore_deferred takes
            return {_TAG: "deferred", "v": [self._encode(arg, pid) for arg in args]}
        raise TypeError(f"JSONSerializer cannot encode {type(obj).__qualname__} objects")

    def _decode(self, data: Any, pl: PersistentLoad | None) -> Any:
        kind = type(data)
        if kind is list:
            return [self._decode(item, pl) for item in data]
        if kind is not dict:
            return data
        tag = data.get(_TAG)
        if tag is None:
            return {key: self._decode(value, pl) for key, value in data.items()}
        value = data.get("v")
        if tag == "tuple":
            return tuple(self._decode(item, pl) for item in value)
        if tag == "bytes":
            return base64.b64decode(value)
        if tag == "dict":
            return {self._decode(k, pl): self._decode(v, pl) for k, v in value}
        if tag == "ref":
            if pl is None:
                raise ValueError("unexpected reference in a message without references")
            return pl(self._decode(value, None))
        return self._decode_object(tag, data, pl)

    def _decode_object(self, tag: str, data: dict[str, Any], pl: PersistentLoad | None) -> Any:
        value = data.get("v")
        if tag == "marker" and value in _MARKERS:
            return _MARKERS[value]
        if tag not in ("failure", "deferred"):
            raise ValueError(f"unknown {_TAG} tag in JSON message: {tag!r}")
        if not isinstance(value, list):
            raise ValueError(f"malformed {tag!r} in JSON message: {value!r}")
        args = [self._decode(arg, pl) for arg in value]
        if tag == "deferred":
            return restore_deferred(*args)
        cls = _FAILURES.get(data.get("type"))  # type: ignore[arg-type]
        if cls is None:
            raise ValueError(f"unknown failure type in JSON message: {data.get('type')!r}")
        failure = cls(*args)
        attempts = data.get("attempts")
        if isinstance(attempts, int) and not isinstance(attempts, bool):
            failure.attempts = attempts
        failure.retryable = data.get("retryable") is True
        return failure

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# -- signing --------------------------------------------------------------------

Secret = str | bytes


def _keys(secret: Secret | Sequence[Secret]) -> list[bytes]:
    items = [secret] if isinstance(secret, (str, bytes)) else list(secret)
    keys = [item.encode() if isinstance(item, str) else bytes(item) for item in items]
    if not keys or not all(keys):
        raise ValueError("a signing secret must be a non-empty string or bytes")
    return keys


class SignedSerializer(Serializer):
    """Wraps a serializer: every message is signed with HMAC-SHA256.

    A message is ``b"PXH1" + HMAC-SHA256(secret, body) + body``.  ``loads``
    verifies the signature (in constant time) *before* handing ``body`` to
    the inner serializer, so bytes that did not come from a holder of the
    secret are never unpickled.

    :param inner: The format of the body (pickle by default).
    :param secret: The shared secret (``str`` is UTF-8 encoded), or a list
        of secrets to rotate keys: the first signs, any of them verifies.
    :raises ValueError: for an empty secret.
    """

    def __init__(
        self, inner: Serializer | None = None, *, secret: Secret | Sequence[Secret]
    ) -> None:
        self.inner = inner if inner is not None else PickleSerializer()
        self._keys = _keys(secret)

    def dumps(self, obj: Any, persistent_id: PersistentId | None = None) -> bytes:
        body = self.inner.dumps(obj, persistent_id)
        mac = hmac.new(self._keys[0], body, hashlib.sha256).digest()
        return b"".join((SIGNED_MAGIC, mac, body))

    def loads(self, data: bytes, persistent_load: PersistentLoad | None = None) -> Any:
        if not isinstance(data, (bytes, bytearray)) or data[:4] != SIGNED_MAGIC:
            raise SignatureError("message is not signed (rejected without decoding it)")
        mac, body = bytes(data[4:36]), bytes(data[36:])
        for key in self._keys:
            if hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
                return self.inner.loads(body, persistent_load)
        raise SignatureError(
            "message signature does not match: tampered with, or signed with another "
            "secret (rejected without decoding it)"
        )

    def __repr__(self) -> str:
        # Never the secret itself.
        return f"{type(self).__name__}({self.inner!r}, secret=<{len(self._keys)} key(s)>)"

"""How the task-queue layer turns objects into bytes and back.

Owned here: the :class:`Serializer` interface and the default
:class:`PickleSerializer`.  The :class:`~poolx.core.Broker` owns *one*
serializer and is its only caller; storage backends only ever see ``bytes``.

The one thing a serializer must do beyond plain ``dumps`` / ``loads`` is let
the broker swap objects for references on the way out and back in: a
:class:`~poolx.task.Deferred` passed as a task argument is written as its task
id (``persistent_id``) and read back as that task's *result*
(``persistent_load``).  Pickle has this built in; another format (JSON, a
signed envelope) implements the same two hooks in its own way, which is the
seam the Redis backend's HMAC signing and JSON serializer plug into.

Errors: ``dumps`` and ``loads`` may raise anything their format raises; the
broker turns a failure into :class:`SerializationError` (at enqueue, naming
the task) or into a failed task (at the worker), so nothing is lost silently.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from typing import Any

__all__ = ["Serializer", "PickleSerializer", "SerializationError"]

PersistentId = Callable[[Any], Any]
PersistentLoad = Callable[[Any], Any]


class SerializationError(TypeError):
    """An object could not be serialized (raised at enqueue time).

    A ``TypeError`` because the usual cause is an argument of a type the
    serializer cannot handle (a lock, a socket, a lambda under pickle).
    """


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


class PickleSerializer(Serializer):
    """The default: pickle at the highest protocol (WorQ compatible)."""

    protocol = pickle.HIGHEST_PROTOCOL

    def dumps(self, obj: Any, persistent_id: PersistentId | None = None) -> bytes:
        if persistent_id is None:
            return pickle.dumps(obj, self.protocol)
        buf = io.BytesIO()
        pickler = pickle.Pickler(buf, self.protocol)
        pickler.persistent_id = persistent_id
        pickler.dump(obj)
        return buf.getvalue()

    def loads(self, data: bytes, persistent_load: PersistentLoad | None = None) -> Any:
        unpickler = pickle.Unpickler(io.BytesIO(data))
        if persistent_load is not None:
            unpickler.persistent_load = persistent_load
        return unpickler.load()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(protocol={self.protocol})"

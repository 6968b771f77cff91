"""Pickling of what travels to and from workers: functions, calls, values.

Who uses it: :class:`~poolx.Pool` (parent side) passes each function through
:func:`portable`, then :mod:`poolx.engine.payload` pickles the call (and a
worker its result) with :data:`PROTOCOL`, big buffers out of band; workers
pickle errors with :data:`PROTOCOL`.  Anything plain
pickle cannot send by reference (lambdas, closures, functions defined
interactively) is wrapped by :func:`portable` and travels as cloudpickle
bytes; the worker gets the function itself back.  Every receiver unpickles
with :func:`unpickle`, which gives numpy arrays back writable, as protocol 4
and the standard library's pool do.
"""

from __future__ import annotations

import functools
import io
import pickle
import re
import weakref
from collections.abc import Callable
from typing import Any

PROTOCOL = pickle.HIGHEST_PROTOCOL


class _Cloudpickled:
    """A callable that plain pickle cannot send, carried as cloudpickle bytes.

    Unpickling yields the original function itself, so the worker never sees
    this wrapper.
    """

    __slots__ = ("data", "func", "__weakref__")

    def __init__(self, func: Callable[..., Any], data: bytes | None = None) -> None:
        self.func = func
        if data is None:
            # Imported on first use (it costs memory); a worker forked while this
            # import runs in another thread is repaired by repair_import_locks().
            import cloudpickle

            data = cloudpickle.dumps(func, protocol=PROTOCOL)
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        import cloudpickle

        return cloudpickle.loads, (self.data,)

    def __call__(self, *args: Any, **kwds: Any) -> Any:
        return self.func(*args, **kwds)


# function -> None (plain pickle sends it) or its cloudpickle bytes.  The
# values must never refer to the function: a weak key whose value holds it
# strongly would never be collected (nor a bound method's instance with it).
_portable_cache: weakref.WeakKeyDictionary[Any, bytes | None] = weakref.WeakKeyDictionary()


def portable(func: Callable[..., Any]) -> Callable[..., Any]:
    """Return ``func`` itself if plain pickle can send it, else a wrapper.

    The wrapper pickles through cloudpickle, which handles lambdas and
    closures.  The answer is cached per function object.
    """
    try:
        data = _portable_cache[func]
        return func if data is None else _Cloudpickled(func, data)
    except (KeyError, TypeError):
        pass
    try:
        pickle.dumps(func, PROTOCOL)
        result: Callable[..., Any] = func
        data = None
    except Exception:
        wrapper = _Cloudpickled(func)
        result, data = wrapper, wrapper.data
    try:
        _portable_cache[func] = data
    except TypeError:  # not weak-referenceable (builtins): no cache
        pass
    return result


# numpy's protocol-5 rebuilder (numpy 1 and 2): it yields a read-only array
# from a read-only buffer, where protocol 4 (the standard library's pool)
# always gives a writable copy.
_FROMBUFFER = "_frombuffer"
_NUMPY_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
_MAY_NEED_NUMPY = re.compile(re.escape(_FROMBUFFER.encode()))


class _Unpickler(pickle.Unpickler):
    """Rebuilds numpy arrays writable, as the standard library's pool does."""

    def find_class(self, module: str, name: str) -> Any:
        found = super().find_class(module, name)
        if name == _FROMBUFFER and module in _NUMPY_NUMERIC:
            return functools.partial(_writable_array, found)
        return found


def _writable_array(frombuffer: Any, *args: Any) -> Any:
    array = frombuffer(*args)
    return array if array.flags.writeable else array.copy(order="K")


def unpickle(data: bytes | memoryview, buffers: Any = None) -> Any:
    """``pickle.loads`` for what travels between a pool and its workers
    (calls, results, errors).

    A numpy array pickled with protocol 5 from a read-only buffer (such as
    ``np.frombuffer(some_bytes)``) would come back read-only; here it comes
    back as a writable copy, as with protocol 4 and the standard library's
    pool.  A pickle without numpy arrays is a plain ``pickle.loads``.
    """
    if _MAY_NEED_NUMPY.search(data) is None:
        return pickle.loads(data, buffers=buffers)
    return _Unpickler(io.BytesIO(data), buffers=buffers).load()

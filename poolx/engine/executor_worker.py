"""The worker side of :class:`poolx.ProcessPoolExecutor`: one call, one outcome.

Who owns what: the executor (:mod:`poolx.engine.executor`, parent side)
pickles each call itself and hands the engine an opaque job,
``run_call(slot, token, payload)``.  This module is all a worker imports for
it (never the pool or the executor), and it decides how the call's outcome
travels back, so that the executor behaves as ``concurrent.futures`` does
rather than as ``multiprocessing.Pool`` does:

* any ``BaseException`` the call raises (``SystemExit`` included) is its
  future's exception, rebuilt in the parent with the worker's traceback text
  as ``__cause__`` (the standard library's ``_RemoteTraceback``);
* a result that cannot be pickled fails its future with the pickling error
  itself (the pool would wrap it in ``MaybeEncodingError``);
* arguments that cannot be unpickled in the worker are reported as such
  (the standard library's worker would crash and break the whole executor).

The outcome is a pickle of ``(code, value)``; the executor unpickles it on
the pool's callback thread, so a result that cannot be rebuilt in the parent
fails only its own future.

Terminating a call that has not started: the executor gives each call it
hands to the engine a *slot* in a shared array (installed in every worker by
:func:`init_worker`) and writes the call's token there to stop it.  A worker
reads the slot just before it unpickles the call; the engine's own
``terminate_job`` stops a call that is already running.  Between the two,
no call asked to stop ever runs to completion unnoticed.
"""

from __future__ import annotations

import pickle
import traceback
from concurrent.futures import process as _cf_process
from itertools import starmap
from typing import Any

from poolx.engine.pickling import PROTOCOL, unpickle

RESULT, ERROR, NOT_STARTED, BAD_CALL = 0, 1, 2, 3

_NOT_STARTED = pickle.dumps((NOT_STARTED, None), PROTOCOL)
# The worker's view of the executor's stop slots (set by init_worker; a
# worker process serves exactly one executor).
_stop_slots: Any = None
# Module-level functions by their pickle (a reference by name): unpickled once.
_functions: dict[bytes, Any] = {}


class _RemoteTracebackFallback(Exception):
    def __init__(self, tb: str) -> None:
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


# The standard library's own class, so that ``__cause__`` looks exactly as it
# does with concurrent.futures (a fallback if a future Python drops it).
RemoteTraceback: type[BaseException] = getattr(_cf_process, "_RemoteTraceback",
                                               _RemoteTracebackFallback)


def rebuild_exception(exc: BaseException, tb: str) -> BaseException:
    """Unpickling hook (parent side): the exception, with the worker's traceback."""
    exc.__cause__ = RemoteTraceback(tb)  # type: ignore[call-arg]
    return exc


class _ExceptionWithTraceback:
    """Carries an exception and its formatted traceback across the pipe."""

    __slots__ = ("exc", "tb")

    def __init__(self, exc: BaseException) -> None:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        exc.__traceback__ = None  # frames hold the call's locals: let them go
        self.exc = exc
        self.tb = f'\n"""\n{text}"""'

    def __reduce__(self) -> tuple[Any, ...]:
        return rebuild_exception, (self.exc, self.tb)


def _encode_error(code: int, exc: BaseException) -> bytes:
    try:
        return pickle.dumps((code, _ExceptionWithTraceback(exc)), PROTOCOL)
    except BaseException as pickling_error:  # the exception itself cannot be pickled
        try:
            return pickle.dumps((code, _ExceptionWithTraceback(pickling_error)), PROTOCOL)
        except BaseException:
            fallback = RuntimeError(f"{type(exc).__name__}: {exc!r} (could not be pickled)")
            return pickle.dumps((code, fallback), PROTOCOL)


def init_worker(stop_slots: Any, initializer: Any, initargs: Any) -> None:
    """The engine's initializer for executor workers: install the stop slots,
    then run the user's initializer (a failure is logged as the standard
    library logs it, and re-raised so the engine knows)."""
    global _stop_slots
    _stop_slots = stop_slots
    if initializer is None:
        return
    try:
        initializer(*initargs)
    except BaseException:
        import logging

        logging.getLogger("concurrent.futures").critical("Exception in initializer:", exc_info=True)
        raise


def _load_function(data: bytes) -> Any:
    fn = _functions[data] = pickle.loads(data)
    return fn


def run_call(slot: int, token: int, payload: bytes) -> bytes:
    """Run one pickled ``(fn, args, kwargs)`` call; return its pickled outcome."""
    slots = _stop_slots
    if slots is not None and slots[slot] == token:
        return _NOT_STARTED
    try:
        fn, args, kwargs = unpickle(payload)
        if type(fn) is bytes:  # a module-level function, pickled once by the executor
            fn = _functions.get(fn) or _load_function(fn)
    except Exception as exc:  # SystemExit and the like end the worker: it is lost
        return _encode_error(BAD_CALL, exc)
    del payload
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:
        return _encode_error(ERROR, exc)
    del fn, args, kwargs  # free the arguments before the result travels
    try:
        return pickle.dumps((RESULT, value), PROTOCOL)
    except BaseException as exc:
        return _encode_error(ERROR, exc)


def run_chunk(fn: Any, chunk: Any) -> list[Any]:
    """One chunk of ``executor.map``: ``fn(*args)`` for each args tuple."""
    return list(starmap(fn, chunk))

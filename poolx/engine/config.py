"""The pool's settings, as the supervisor and its parts read them.

Who owns what: :class:`~poolx.Pool` validates its arguments and builds one
immutable :class:`PoolConfig`; the :class:`~poolx.engine.supervisor.Supervisor`
and the parts it delegates to (workers, dispatch, health, limits) only read
it.  It lives in its own module so that those parts need not import the
supervisor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class PoolConfig(NamedTuple):
    """Everything the supervisor needs to know, validated by :class:`~poolx.Pool`."""

    processes: int
    context: Any
    initializer: Any
    initargs: tuple[Any, ...]
    maxtasksperchild: int | None
    max_memory_per_child: int | None  # KiB
    soft_timeout: float | None
    timeout: float | None
    memory_limit: int | None
    memory_poll_interval: float
    max_restarts: int | None
    max_restart_freq: float
    on_process_up: Callable[[Any], Any] | None
    on_process_down: Callable[[Any], Any] | None
    on_process_exit: Callable[[int, int], Any] | None
    on_timeout_set: Callable[[Any, Any, Any], Any] | None
    on_timeout_cancel: Callable[[Any], Any] | None
    shm_threshold: int | None = None  # bytes; None: no shared memory (poolx.engine.payload)

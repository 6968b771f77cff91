"""Which backend serves which URL scheme (layer L4, like the backends).

Owned here: :class:`BackendRegistry` and :data:`registry`, the one registry
instance (the only process-wide mutable state of the task-queue layer besides
the ``memory://`` stores themselves, see :mod:`poolx.queue.memory`).

A scheme is looked up in this order:

1. factories registered in code with :func:`poolx.core.register_backend`
   (these may replace anything else);
2. the built-in backends, :data:`BUILTIN_BACKENDS` (``memory``; ``redis``,
   ``rediss``, ``unix`` and ``redis+cluster``, which need redis-py: ``pip install
   'poolx[redis]'``) — the one table of them: they work from a source tree
   too, without installed package metadata;
3. the ``poolx.queues`` entry-point group, read once per process, so another
   package can add a scheme by declaring, in its ``pyproject.toml``::

       [project.entry-points."poolx.queues"]
       myscheme = "mypackage.queue:TaskQueue"

A factory is a class or callable ``factory(url, name, *args, **kw)``
returning an :class:`~poolx.core.AbstractTaskQueue`; if it has a ``factory``
attribute (a classmethod), that is called instead, which lets a backend share
one instance per URL.
"""

from __future__ import annotations

import threading
from importlib.metadata import entry_points
from pkgutil import resolve_name
from typing import Any

__all__ = ["BackendRegistry", "registry", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "poolx.queues"

BUILTIN_BACKENDS = {
    "memory": "poolx.queue.memory:TaskQueue",
    "redis": "poolx.queue.redis:TaskQueue",
    "rediss": "poolx.queue.redis:TaskQueue",
    "unix": "poolx.queue.redis:TaskQueue",
    "redis+cluster": "poolx.queue.redis:TaskQueue",
}


class BackendRegistry:
    """Maps URL schemes (``memory``, ``redis``...) to backend factories."""

    def __init__(self, builtins: dict[str, str] | None = None) -> None:
        self._lock = threading.Lock()
        self._registered: dict[str, Any] = {}
        self._builtins = dict(BUILTIN_BACKENDS if builtins is None else builtins)
        self._entry_points: dict[str, str] | None = None

    def register(self, scheme: str, factory: Any, replace: bool = False) -> None:
        """Serve ``scheme://`` URLs with ``factory``.

        :param factory: A class or callable, or a ``"module:attribute"``
            string imported on first use.
        :raises ValueError: if the scheme is already registered in code and
            ``replace`` is false.
        """
        scheme = scheme.lower()
        with self._lock:
            if scheme in self._registered and not replace:
                raise ValueError(f"task queue backend for {scheme}:// is already registered")
            self._registered[scheme] = factory

    def unregister(self, scheme: str) -> None:
        """Forget a scheme registered in code (entry points and built-ins stay)."""
        with self._lock:
            self._registered.pop(scheme.lower(), None)

    def _entry_point_table(self) -> dict[str, str]:
        # Scanning installed distributions is slow: do it once, lazily.
        if self._entry_points is None:
            table = {ep.name.lower(): ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
            with self._lock:
                self._entry_points = table
        return self._entry_points

    def schemes(self) -> list[str]:
        """Every scheme that can currently be served."""
        names = set(self._builtins) | set(self._registered) | set(self._entry_point_table())
        return sorted(names)

    def lookup(self, scheme: str) -> Any:
        """The factory for ``scheme``, imported if needed.

        :raises KeyError: for an unknown scheme.
        :raises ImportError: if the backend's module cannot be imported (for
            example a missing optional dependency), naming the scheme.
        """
        scheme = scheme.lower()
        with self._lock:
            factory = self._registered.get(scheme)
        if factory is None:
            factory = self._builtins.get(scheme) or self._entry_point_table().get(scheme)
        if factory is None:
            raise KeyError(scheme)
        if isinstance(factory, str):
            try:
                factory = resolve_name(factory)
            except (ImportError, AttributeError, ValueError) as err:
                raise ImportError(
                    f"cannot load the task queue backend for {scheme}:// URLs ({factory}): {err}"
                ) from err
        return factory


registry = BackendRegistry()
"""The registry :func:`poolx.core.get_broker` consults."""

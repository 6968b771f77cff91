"""Suite-wide fixtures and helpers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

_NEVER = threading.Event()


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01) -> object:
    """Bounded polling: return the first truthy value of ``predicate``, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        _NEVER.wait(interval)  # a bounded pause between polls, not a synchronization

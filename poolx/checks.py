"""Shared argument checks (L0): counts, seconds, sizes, callables, backoff.

Used by the engine (:mod:`poolx.engine`) and the task-queue layer alike, so
that one kind of argument is checked, and worded, in one place.

Every message names the argument and says what is wrong, and ``True`` /
``False`` are never accepted where a number is expected (they are ints to
Python, but never what the caller meant).
"""

from __future__ import annotations

import re
from typing import Any

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_count(name: str, value: Any, minimum: int, *, allow_none: bool = False) -> int | None:
    """An int >= ``minimum`` (or None when allowed)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def check_seconds(
    name: str, value: Any, *, allow_none: bool = True, allow_zero: bool = False
) -> float | None:
    """None (when allowed), or a positive number of seconds (or zero, when allowed)."""
    if value is None and allow_none:
        return None
    if not _is_number(value):
        kind = "a number of seconds or None" if allow_none else "a number of seconds"
        raise TypeError(f"{name} must be {kind}, not {type(value).__name__}")
    if not (value >= 0 if allow_zero else value > 0):
        kind = "a number of seconds >= 0" if allow_zero else "a positive number of seconds"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return float(value)


def check_callable(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, not {type(value).__name__}")
    return value


def parse_size(name: str, value: Any) -> int | None:
    """A size in bytes: an int, or a string such as ``"512MB"`` or ``"1.5GiB"``."""
    if value is None:
        return None
    if isinstance(value, str):
        match = _SIZE.match(value)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(
                f"{name} must be a number of bytes or a size like '512MB' or '1.5GiB', got {value!r}"
            )
        size = int(float(match.group(1)) * _UNITS[unit])
    elif _is_number(value):
        size = int(value)
    else:
        raise TypeError(f"{name} must be an int (bytes) or a size string, not {type(value).__name__}")
    if size <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return size


def backoff_delay(failures: int, *, cap: float, base: float = 0.05) -> float:
    """Seconds to wait after ``failures`` failures in a row: none after none,
    then ``base``, doubling each time, never more than ``cap``."""
    if failures <= 0:
        return 0.0
    return min(cap, base * 2.0 ** min(failures - 1, 64))


class MovingAverage:
    """An exponentially weighted moving average: each new sample weighs
    ``weight`` (recent tasks' mean run time, which prefetching follows)."""

    __slots__ = ("weight", "value")

    def __init__(self, weight: float = 0.2) -> None:
        self.weight = weight
        self.value: float | None = None
        """The average; None before the first sample."""

    def add(self, sample: float) -> None:
        value = self.value
        self.value = sample if value is None else value + (sample - value) * self.weight


def prefetch_depth(mean: float | None, window: float, maximum: int) -> int:
    """How many tasks beyond the running one a worker may hold: as many as
    fit in ``window`` seconds at ``mean`` seconds each, at most ``maximum``;
    none while the mean is unknown or not shorter than the window."""
    if mean is None or mean >= window:
        return 0
    return min(maximum, int(window / max(mean, 1e-9)))

"""Periodic schedules: when the ticks of ``broker.periodic(...)`` fall.

Owned here: :class:`Schedule` — ``every=`` seconds or a ``cron=``
expression (read by croniter, the ``cron`` extra) — turned into the text a
backend stores with the entry and back, and the one rule for the next tick:
:meth:`Schedule.next_after`; and :class:`PeriodicEntryError`, a stored entry
whose run cannot be built here (as opposed to a backend that failed).

Missed ticks.  A scheduler claims a tick only when it is due; the claim
moves the entry's next run to the first tick *after the claim's time*.  So
ticks missed while no scheduler ran (or while Redis was down) are not
replayed in a burst: the late tick runs once, then the schedule resumes on
its grid (``every`` ticks stay on multiples of the period from the first
run; cron ticks on the expression's times).

Layer L4.5: only the standard library, :mod:`poolx.checks` and croniter;
:mod:`poolx.core` (the broker) and the scheduler loop use it.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from poolx.checks import check_seconds
from poolx.exceptions import ExtraNotInstalled

__all__ = ["Schedule", "PeriodicEntryError"]

_EVERY = "every "
_CRON = "cron "


class PeriodicEntryError(ValueError):
    """A stored periodic entry whose run cannot be built in this process
    (its spec was signed with another secret, names a class this process
    cannot load, or its schedule needs croniter): a scheduler skips that
    version of the entry, unlike a backend error, which it retries."""


def _croniter() -> Any:
    try:
        from croniter import croniter
    except ImportError as err:
        raise ExtraNotInstalled("periodic tasks with cron=", "croniter", "cron") from err
    return croniter


def _whole_ms(seconds: float) -> float:
    """``seconds`` rounded up to a whole millisecond (float noise such as
    0.30000000000000004 is not rounded up)."""
    return math.ceil(round(seconds * 1000, 3)) / 1000


class Schedule:
    """When a periodic task runs: every ``every`` seconds, or at the times a
    cron expression names (croniter's syntax: five fields, or six with
    seconds last; in UTC).

    :param every: The period in seconds (> 0).
    :param cron: A cron expression such as ``"*/5 * * * *"``.
    :raises ValueError: unless exactly one is given, or for an invalid value.
    :raises poolx.exceptions.ExtraNotInstalled: for ``cron`` without croniter.
    """

    def __init__(self, every: float | None = None, cron: str | None = None) -> None:
        if (every is None) == (cron is None):
            raise ValueError("give every= (seconds) or cron= (an expression), not both or neither")
        self.every: float | None = None
        self.cron: str | None = None
        if every is not None:
            try:
                self.every = float(check_seconds("every", every, allow_none=False))  # type: ignore[arg-type]
            except TypeError as err:
                raise ValueError(str(err)) from None
        else:
            if not isinstance(cron, str) or not _croniter().is_valid(cron):
                raise ValueError(f"invalid cron expression: {cron!r}")
            self.cron = " ".join(cron.split())

    @property
    def text(self) -> str:
        """The schedule as stored with the entry (``"every 60"``,
        ``"cron */5 * * * *"``); :meth:`from_text` reads it back."""
        if self.every is not None:
            every = int(self.every) if self.every.is_integer() else self.every
            return f"{_EVERY}{every!r}"
        return f"{_CRON}{self.cron}"

    @classmethod
    def from_text(cls, text: str) -> Schedule:
        """The schedule :attr:`text` describes.

        :raises ValueError: for a text no schedule writes.
        """
        if text.startswith(_EVERY):
            return cls(every=float(text[len(_EVERY):]))
        if text.startswith(_CRON):
            return cls(cron=text[len(_CRON):])
        raise ValueError(f"not a periodic schedule: {text!r}")

    def first(self, now: float) -> float:
        """The first tick of an entry registered at ``now`` (epoch seconds):
        ``every`` seconds later (rounded up to a whole millisecond, the
        resolution backends store), or the expression's next time."""
        if self.every is not None:
            return _whole_ms(now + self.every)
        return self._cron_next(now)

    def next_after(self, due: float, now: float) -> float:
        """The tick that follows the one due at ``due``, claimed at ``now``
        (>= ``due``): the first tick of the schedule later than ``now`` —
        ticks missed meanwhile are skipped, not replayed."""
        if self.every is not None:
            periods = math.floor((now - due) / self.every) + 1
            following = _whole_ms(due + max(1, periods) * self.every)
            while following <= now:  # floating-point edge
                following = _whole_ms(following + self.every)
            return following
        return self._cron_next(max(due, now))

    def _cron_next(self, after: float) -> float:
        start = datetime.fromtimestamp(after, timezone.utc)
        following = _croniter()(self.cron, start).get_next(datetime)
        return float(following.timestamp())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"<Schedule {self.text}>"

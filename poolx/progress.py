"""Progress bars: the ``progress_bar=`` option and its tqdm adapter.

Who owns what: this module turns a ``progress_bar`` argument (``False``,
``True`` or a dict of tqdm options) into a :class:`ProgressBar` — the small
interface poolx's front ends report to (items finished, items failed,
close) — and owns the one adapter that implements it with tqdm.  It does
not count anything itself: the engine's
:class:`~poolx.engine.progress.Tracker` counts a pool call's items and
:func:`poolx.task.wait_all` the results it collects, and both show their
counts through a bar made here.

tqdm is the ``progress`` extra: it is imported only when a bar is asked
for (:func:`open_bar` with a true option), so poolx and its workers never
load it otherwise; without it :func:`open_bar` raises
:class:`~poolx.exceptions.ExtraNotInstalled`.

Layer: below the engine and the task layer, which both use it; above L0
(it raises L0's exceptions).  The layering contract ``engine-deps`` allows
this module, and only it, to import tqdm (pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from poolx.exceptions import ExtraNotInstalled

__all__ = ["ProgressBar", "ProgressOption", "check_option", "open_bar", "DEFAULT_INTERVAL"]

ProgressOption = bool | Mapping[str, Any]
"""What ``progress_bar=`` accepts: ``False`` (no bar), ``True`` (a bar with
poolx's defaults) or a mapping of ``tqdm`` keyword arguments."""

DEFAULT_INTERVAL = 0.1
"""Seconds between two refreshes of a bar (tqdm's ``mininterval`` default)."""


class ProgressBar(Protocol):
    """What a front end reports to.  Counts are totals so far, never deltas,
    so a report may be skipped or repeated without harm."""

    def show(self, items: int, failed: int) -> None:
        """``items`` items have finished so far, ``failed`` of them failed.
        Called again with the same counts, it refreshes the elapsed time."""
        ...

    def close(self) -> None:
        """The call is over (or abandoned): finish the bar.  Called once."""
        ...


def check_option(option: Any) -> dict[str, Any] | None:
    """The tqdm options ``option`` asks for (a new dict), or None for no bar.

    TypeError, in the caller's thread, for anything but a bool or a mapping
    with string keys.
    """
    if option is False or option is None:
        return None
    if option is True:
        return {}
    if isinstance(option, Mapping) and all(isinstance(key, str) for key in option):
        return dict(option)
    raise TypeError("progress_bar must be a bool or a dict of tqdm options, "
                    f"not {type(option).__name__} ({option!r})")


def refresh_interval(options: Mapping[str, Any]) -> float:
    """How often (s) counts are pushed to a bar: its ``mininterval``."""
    interval = options.get("mininterval", DEFAULT_INTERVAL)
    if not isinstance(interval, (int, float)) or isinstance(interval, bool) or interval < 0:
        raise ValueError(f"mininterval must be a number of seconds >= 0, not {interval!r}")
    return max(float(interval), 0.01)


def open_bar(options: Mapping[str, Any], total: int | None, what: str = "progress_bar") -> ProgressBar:
    """A tqdm bar showing ``total`` items (None: unknown, the bar counts up).

    ``options`` (from :func:`check_option`) are tqdm's keyword arguments;
    its ``total`` wins over ``total``.  ``what`` names the feature in the
    :class:`~poolx.exceptions.ExtraNotInstalled` raised without tqdm.
    Unknown options raise tqdm's own ``TqdmKeyError`` (a ``KeyError``).
    """
    try:
        from tqdm.auto import tqdm
    except ImportError as err:
        raise ExtraNotInstalled(what, "tqdm", "progress") from err
    return _TqdmBar(tqdm, options, total)


class _TqdmBar:
    """:class:`ProgressBar` on a tqdm bar: the count is the bar's position,
    failures its postfix (``failed=N``, shown once there is one)."""

    def __init__(self, tqdm: Any, options: Mapping[str, Any], total: int | None) -> None:
        kwargs = {"total": total, "unit": "item", "mininterval": DEFAULT_INTERVAL}
        kwargs.update(options)
        self._bar = tqdm(**kwargs)
        self._failed = 0

    def show(self, items: int, failed: int) -> None:
        bar = self._bar
        if failed != self._failed:
            self._failed = failed
            bar.set_postfix(failed=failed, refresh=False)
        if items != bar.n:
            bar.update(items - bar.n)  # tqdm redraws at most every mininterval
        else:
            bar.refresh()  # nothing finished: the elapsed time still moves

    def close(self) -> None:
        self._bar.close()

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

import os
import sys
import time
from collections.abc import Mapping
from typing import Any, Protocol

from poolx import checks
from poolx.exceptions import ExtraNotInstalled

__all__ = ["ProgressBar", "ProgressOption", "check_option", "refresh_interval", "open_bar",
           "DEFAULT_INTERVAL"]

ProgressOption = bool | Mapping[str, Any]
"""What ``progress_bar=`` accepts: ``False`` (no bar), ``True`` (a bar with
poolx's defaults) or a mapping of ``tqdm`` keyword arguments."""

IDLE_REFRESH = 1.0
"""Seconds between two redraws of a bar on a terminal when no item finished
(only its elapsed time moves); a bar written to a file is not redrawn then."""

DEFAULT_INTERVAL = 0.1
"""Seconds between two refreshes of a bar (tqdm's ``mininterval`` default)."""


class ProgressBar(Protocol):
    """What a front end reports to.  Counts are totals so far, never deltas,
    so a report may be skipped or repeated without harm.  Neither method
    raises: a bar that cannot be drawn is logged once and goes quiet, so
    progress is never a reason for a call to fail."""

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
    """How often (s) counts are pushed to a bar: its ``mininterval``
    (TypeError or ValueError, as poolx's other seconds, for a bad one)."""
    interval = checks.check_seconds("mininterval", options.get("mininterval", DEFAULT_INTERVAL),
                                    allow_none=False, allow_zero=True)
    assert interval is not None
    return max(interval, 0.01)


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
    failures its postfix (``failed=N``, shown once there is one).

    tqdm writes while holding its process-wide lock and does not release it
    if the write raises (a closed pipe, a full disk): every later bar of
    the process would then hang.  So the file tqdm gets is a
    :class:`_GuardedFile`, which keeps its first error; the bar then logs
    it and goes quiet.
    """

    def __init__(self, tqdm: Any, options: Mapping[str, Any], total: int | None) -> None:
        kwargs: dict[str, Any] = {"total": total, "unit": "item", "mininterval": DEFAULT_INTERVAL}
        kwargs.update(options)
        file = kwargs.get("file")
        self._file = _GuardedFile(sys.stderr if file is None else file)
        kwargs["file"] = self._file
        if kwargs.get("ncols") is None:
            # tqdm sizes a bar to the terminal only for sys.stderr/stdout
            # themselves, which it no longer sees behind the guard
            columns = _columns(self._file.wrapped)
            if columns:
                kwargs["ncols"] = columns
        self._bar = tqdm(**kwargs)
        self._tty = _isatty(self._file.wrapped)  # a log file gets no frames of an unchanged bar
        self._refreshed = time.monotonic()
        self._failed = 0
        self._quiet = False
        self._check()

    def show(self, items: int, failed: int) -> None:
        if self._quiet:
            return
        bar = self._bar
        try:
            if failed != self._failed:
                self._failed = failed
                bar.set_postfix(failed=failed, refresh=False)
            if items != bar.n:
                bar.update(items - bar.n)  # tqdm redraws at most every mininterval
            elif self._tty and time.monotonic() - self._refreshed >= IDLE_REFRESH:
                bar.refresh()  # nothing finished: on a terminal the elapsed time still moves
                self._refreshed = time.monotonic()
        except Exception as err:
            self._give_up(err)
        self._check()

    def close(self) -> None:
        try:
            self._bar.close()
        except Exception as err:
            self._give_up(err)
        self._check()

    def _check(self) -> None:
        if self._file.error is not None and not self._quiet:
            self._give_up(self._file.error)

    def _give_up(self, error: Exception) -> None:
        self._quiet = True
        self._file.error = error  # nothing more is written
        import logging

        logging.getLogger("poolx").error("poolx: the progress bar cannot be drawn (%s: %s); "
                                         "it is no longer updated", type(error).__name__, error)


class _GuardedFile:
    """A bar's file: the first error of ``write``/``flush`` is kept, not
    raised (see :class:`_TqdmBar`), and nothing is written after it."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped
        self.error: Exception | None = None

    def write(self, text: str) -> int:
        if self.error is None:
            try:
                return int(self.wrapped.write(text) or 0)
            except Exception as err:
                self.error = err
        return 0

    def flush(self) -> None:
        if self.error is None:
            try:
                self.wrapped.flush()
            except Exception as err:
                self.error = err

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding...
        return getattr(self.wrapped, name)

    # tqdm.write() and logging_redirect_tqdm find the bars to clear by their
    # file (``bar.fp == sys.stderr``): the guard must compare as its file.
    def __eq__(self, other: object) -> bool:
        return bool(self.wrapped == getattr(other, "wrapped", other))

    def __hash__(self) -> int:
        return hash(self.wrapped)


def _isatty(file: Any) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, OSError, ValueError):
        return False


def _columns(file: Any) -> int:
    """The width of the terminal ``file`` writes to, or 0."""
    try:
        return os.get_terminal_size(file.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0

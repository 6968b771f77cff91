"""Measuring how much memory a worker really uses (psutil).

Both memory limits ask "does this process use more than N bytes?".  Plain
RSS answers wrongly for a worker forked from a large parent: pages it still
shares copy-on-write with the parent count in its RSS although they cost
nothing.  So RSS, which is cheap to read, is only a first filter; when it is
over the limit, the unique set size (USS, pages only this process holds,
from ``/proc/PID/smaps_rollup``) decides.
"""

from __future__ import annotations

from typing import Any


def process(pid: int | None = None) -> Any:
    """A ``psutil.Process`` (psutil is imported on first use: it costs memory)."""
    import psutil

    return psutil.Process(pid)


def usage_over(process: Any, limit: int) -> int | None:
    """Return the process's memory use in bytes if it is over ``limit``, else None.

    ``process`` is a ``psutil.Process``.  Raises ``psutil.Error`` if the
    process is gone.
    """
    rss = process.memory_info().rss
    if rss <= limit:
        return None
    uss = process.memory_full_info().uss
    return uss if uss > limit else None

"""The engine's logger (``poolx``), imported on first use.

``logging`` costs about 1 MiB of memory that a pool which never logs (the
usual case: the engine logs only failures) should not pay.
"""

from __future__ import annotations

from typing import Any


def logger() -> Any:
    import logging

    return logging.getLogger("poolx")

"""``--init`` target for the ``poolx worker`` subprocess tests.

``init`` is the worker initializer.  Importing this module in the worker
command's own process (which resolves ``--init``) with
``POOLX_TEST_PRODUCE_DIR`` set also starts a producer thread there: the
``memory://`` queue lives in that process, so that is where tasks must be
enqueued.  Outcomes are written to files in that directory.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from pathlib import Path

from poolx import TaskFailure, get_queue
from tests.worker.tasks import init, write_atomically

__all__ = ["init"]


def _outcome(res) -> str:
    res.wait(60)
    try:
        return f"ok: {res.value}"
    except TaskFailure as failure:
        return f"failed: {failure}"
    except AttributeError:
        return "no result"


def _produce(directory: Path) -> None:
    q = get_queue("memory://")
    write_atomically(directory / "num", _outcome(q.wt.num("5")))
    write_atomically(directory / "div", _outcome(q.wt.div(1, 0)))
    write_atomically(directory / "g", _outcome(q.wt.touch_and_wait(str(directory), "g")))


_DIR = os.environ.get("POOLX_TEST_PRODUCE_DIR")
if _DIR and sys.argv[1:2] == ["worker"]:  # the command's process, not a worker
    _producer = threading.Thread(target=_produce, args=(Path(_DIR),), daemon=True)
    _producer.start()
    # The command may exit right after its pool stopped: let the producer
    # write the last outcome first (bounded), or a loaded machine loses it.
    atexit.register(_producer.join, 10)

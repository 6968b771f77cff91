"""A pool process on Redis for the cross-process tests (run_in_subprocess):
a process WorkerPool on the ``wt`` tasks, run by start_pools until signalled,
logging to ``tmp/log`` and writing ``tmp/exited`` when it returns."""

from __future__ import annotations

import logging
from pathlib import Path

from poolx.core import get_broker
from poolx.pool.process import WorkerPool, start_pools
from tests.worker import tasks


def serve(url: str, tmp: str, workers: int = 1) -> None:
    logging.basicConfig(filename=str(Path(tmp, "log")), level=logging.INFO,
                        format="%(process)d %(name)s %(message)s")
    pool = WorkerPool(get_broker(url), tasks.init, workers=workers)
    start_pools(pool, timeout=1)
    Path(tmp, "exited").write_text("")

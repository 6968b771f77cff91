"""A pool process for the signal tests, started with run_in_subprocess.

It runs a WorkerPool on memory:// with start_pools (blocking, handling
SIGTERM/SIGINT) and, on a thread, enqueues one task that blocks on files in
``tmp`` and writes its outcome to ``tmp/result``.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from poolx import TaskFailure, get_queue
from poolx.pool.process import WorkerPool, start_pools
from tests.worker import tasks


def serve(tmp: str, init=tasks.init) -> None:
    logging.basicConfig(filename=str(Path(tmp, "log")), level=logging.INFO,
                        format="%(process)d %(name)s %(message)s")
    url = "memory://"
    pool = WorkerPool(tasks.init(url), init, workers=1)

    def produce() -> None:
        res = get_queue(url).wt.touch_and_wait(tmp, "g")
        res.wait(60)
        try:
            outcome = str(res.value)
        except TaskFailure as failure:
            outcome = f"failure: {failure}"
        Path(tmp, "result").write_text(outcome)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    start_pools(pool, timeout=0.2)
    producer.join(30)
    Path(tmp, "exited").write_text("")

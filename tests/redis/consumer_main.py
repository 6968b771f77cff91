"""A consumer process for the Redis tests: ``python -m tests.redis.consumer_main
URL THREADS`` runs a thread WorkerPool on the ``rt`` tasks until killed.
Prints ``ready`` once the pool runs."""

from __future__ import annotations

import sys
import threading

from poolx import get_broker
from poolx.pool.thread import WorkerPool
from tests.redis.tasks import ts


def main() -> None:
    url, threads = sys.argv[1], int(sys.argv[2])
    broker = get_broker(url)
    broker.expose(ts)
    pool = WorkerPool(broker, workers=threads)
    pool.start(timeout=1)
    print("ready", flush=True)
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    main()

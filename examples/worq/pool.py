#!/usr/bin/env python
"""WorQ's multi-process worker pool, with poolx imports.

    python examples/worq/pool.py redis://localhost:6379/0     # this terminal
    python examples/worq/main.py redis://localhost:6379/0     # another one

It runs two worker processes until SIGTERM or CTRL+C, then stops gracefully
(running tasks finish); a second CTRL+C stops at once.  The same pool from
the command line: ``poolx worker redis://localhost:6379/0 --init tasks:init``.
"""

import sys

from tasks import init

from poolx.pool.process import WorkerPool


def main(url):
    broker = init(url)
    pool = WorkerPool(broker, init, workers=2)
    pool.start()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "memory://")

#!/usr/bin/env python
"""WorQ's quick start on poolx: enqueue ten tasks and one that adds their
results, then wait for the sum.

    python examples/worq/main.py                    # embedded memory:// queue
    python examples/worq/main.py redis://localhost:6379/0

With ``memory://`` the queue lives in this process, so a thread WorkerPool
runs the tasks here too.  (With Redis, workers usually run elsewhere; the
multi-process pool example comes with ``poolx.pool.process``.)
"""

import logging
import sys

from tasks import init

from poolx import get_queue
from poolx.pool.thread import WorkerPool


def main(url):
    broker = init(url)
    pool = WorkerPool(broker, workers=2)
    pool.start()
    try:
        logging.getLogger(__name__).info("queue: %s", url)
        q = get_queue(url)

        # enqueue tasks to be executed in parallel
        nums = [q.tasks.num(x) for x in range(10)]

        # process the results when they are ready
        result = q.tasks.add(nums)

        # wait for the final result
        result.wait(timeout=30)

        print(f"0 + 1 + ... + 9 = {result.value}")
    finally:
        pool.stop(use_sentinel=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "memory://")

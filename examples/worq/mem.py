#!/usr/bin/env python
"""The quick start in one process, with no server: a ``memory://`` queue
consumed by a *process* worker pool.

    python examples/worq/mem.py

The queue lives in this process; the tasks run in two worker processes, and
their results come back through this process's broker.  (Tasks that enqueue
more tasks need a shared queue such as Redis: a worker's ``memory://`` is its
own.)
"""

from tasks import init

from poolx import get_queue
from poolx.pool.process import WorkerPool


def main(url="memory://"):
    broker = init(url)
    pool = WorkerPool(broker, init, workers=2)
    pool.start(handle_sigterm=False)
    try:
        q = get_queue(url)

        # enqueue tasks to be executed in parallel, in the worker processes
        nums = [q.tasks.num(x) for x in range(10)]

        # process the results when they are ready
        result = q.tasks.add(nums)

        # wait for the final result
        result.wait(timeout=30)

        print(f"0 + 1 + ... + 9 = {result.value}")
    finally:
        pool.stop()


if __name__ == "__main__":
    main()
